"""The runner protocol: a runner loads the model and drives stages of processors and savers over its units."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass, field
from typing import Any, ClassVar

from modelslim_core.runtime.context import RunContext
from modelslim_core.runtime.processor import ProcessorConfig
from modelslim_core.runtime.saver import SaverConfig


@dataclass
class Stage:
    """One pass over the model: `spec.prior` stages have no savers; the main stage has them.

    Calibration data comes from `dataset` (texts the adapter tokenizes) unless the service already holds the
    model's inputs in `samples` (e.g. the captured calls of a diffusion transformer); then `dataset` is unused.
    """

    name: str
    processors: list[ProcessorConfig]
    savers: list[SaverConfig] = field(default_factory=list)
    dataset: str | None = None
    samples: list[Any] | None = None


class Runner(ABC):
    """Base class of runners (found through the `modelslim.runners` entry-point group)."""

    name: ClassVar[str]

    def __init__(self, context: RunContext):
        self.context = context

    @abstractmethod
    def run(self, stages: list[Stage]) -> None:
        """Load the model and run every stage in order; the last stage's savers commit the output."""
