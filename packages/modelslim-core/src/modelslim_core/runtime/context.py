"""The run context: what one quantization run knows, shared by its runner, processors and savers."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import torch

from modelslim_core.debug.recorder import Recorder

if TYPE_CHECKING:
    from modelslim_core.models.base import ModelAdapter


@dataclass
class DeviceSpec:
    """A parsed `--device`: a type ('cpu', 'cuda', 'npu') and optional indices."""

    type: str
    indices: tuple[int, ...] | None = None

    @property
    def torch_device(self) -> torch.device:
        if self.type == "cpu" or not self.indices:
            return torch.device(self.type)
        return torch.device(self.type, self.indices[0])

    def __str__(self) -> str:
        if self.indices:
            return f"{self.type}:{','.join(map(str, self.indices))}"
        return self.type


@dataclass
class RunContext:
    """Inputs of one run plus a shared dict through which stages hand results to each other."""

    adapter: "ModelAdapter"
    model_path: Path
    save_path: Path
    device: DeviceSpec
    compute_dtype: torch.dtype
    state: dict[str, Any] = field(default_factory=dict)
    #: Identifies the run (config, model files, dtype, version): a resume state is only used when it matches.
    fingerprint: str = ""
    #: Set by a lazily loading runner: reads parameters still on `meta` from the source checkpoint.
    weights: Any = None
    #: Where processors report debug records and report statistics (`modelslim_core/debug/recorder.py`).
    recorder: Recorder = field(default_factory=Recorder)
    #: Digest of the normalised config, written into quant_report.json.
    config_digest: str = ""
    #: Host memory the run may use in bytes (--max_memory); None: no explicit budget.
    max_memory: int | None = None
