"""The service protocol and the request every service receives."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

from modelslim_core.debug import DEBUG_DIR, Recorder
from modelslim_core.errors import ConfigError
from modelslim_core.models.base import ModelAdapter
from modelslim_core.runtime.context import DeviceSpec


@dataclass
class QuantRequest:
    """What the CLI resolved: the model, where to write, on which device."""

    adapter: ModelAdapter
    model_path: Path
    save_path: Path
    device: DeviceSpec
    debug: bool = False
    #: Digest of the normalised config, part of the resume fingerprint.
    config_digest: str = ""
    #: Host memory the run may use in bytes (--max_memory); None: no explicit budget.
    max_memory: int | None = None

    def new_recorder(self) -> Recorder:
        """The run's recorder: debug records go to save_path/debug_info/ under --debug."""
        return Recorder(self.save_path / DEBUG_DIR if self.debug else None)


class QuantService(ABC):
    """A service owns one `apiversion`: it validates its `spec` and runs it."""

    apiversion: ClassVar[str]

    @classmethod
    @abstractmethod
    def parse_spec(cls, spec: Any, path: str) -> Any:
        """Validate the `spec` mapping; errors are ConfigError naming the YAML path."""

    @classmethod
    def check_request(cls, spec: Any, request: QuantRequest) -> None:
        """Checks that need the model as well as the spec, done before anything is written or loaded.

        The base check: the model's adapter must be one this service can quantize.
        """
        adapter = request.adapter
        if cls.apiversion not in adapter.apiversions:
            raise ConfigError(
                f"apiversion: {cls.apiversion} cannot quantize model type {adapter.model_type!r} "
                f"(model adapter {adapter.family}).",
                f"use apiversion {' or '.join(adapter.apiversions)} for this model.",
            )

    @abstractmethod
    def run(self, spec: Any, request: QuantRequest) -> None:
        """Quantize `request.adapter`'s model as `spec` says and write the output."""
