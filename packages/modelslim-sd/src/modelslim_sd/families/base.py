"""The adapter of a generation family captured through its own diffusers pipeline.

A family says which pipeline class runs its task, how its inference settings become pipeline calls, and
(optionally) how they configure the pipeline (scheduler shift, solver). Capture, file names and the
fingerprint are shared: the recorded calls depend on every setting except where the pipeline runs
(`offload_model`).
"""

from __future__ import annotations

from abc import abstractmethod
from typing import Any, ClassVar

import torch

from modelslim_core.runtime.unit import UnitInput
from modelslim_sd.adapter import DiffusionAdapter
from modelslim_sd.families.generation import load_pipeline, place, record_generations

#: Settings that change where the pipeline runs, not what the denoisers receive.
_PLACEMENT_KEYS = {"offload_model"}


class GenerationAdapter(DiffusionAdapter):
    """A family whose calibration calls come from running its diffusers pipeline on the configured prompts."""

    #: The task name of families with a single task (file names: calib_data_<task>_<denoiser>.pth).
    default_task: ClassVar[str]

    def pipeline_class_for(self, config: Any) -> str:
        return self.model_index["_class_name"]

    def task_name(self, config: Any) -> str:
        return getattr(config, "task", None) or self.default_task

    def capture_settings(self, config: Any) -> dict[str, Any]:
        return config.model_dump(exclude=_PLACEMENT_KEYS)

    def configure_pipeline(self, pipe: Any, config: Any) -> None:
        """Settings that live on the pipeline rather than in its call (e.g. the scheduler's flow shift)."""

    @abstractmethod
    def generation_calls(self, config: Any) -> list[dict[str, Any]]:
        """The keyword arguments of each calibration generation (without generator and output_type)."""

    def encode_call(self, pipe: Any, call: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """A call whose prompts the family encodes itself (the pipeline's own encoding is then skipped)."""
        return call

    def seed(self, config: Any) -> int:
        return int(getattr(config, "seed", 0))

    def capture_calibration(
        self, config: Any, device: torch.device, dtype: torch.dtype
    ) -> dict[str, list[UnitInput]]:
        calls = self.generation_calls(config)  # checks the settings (e.g. images) before anything loads
        pipe = load_pipeline(self.pipeline_class_for(config), self.model_path, dtype)
        self.configure_pipeline(pipe, config)
        pipe = place(pipe, device, bool(getattr(config, "offload_model", False)))
        components = [denoiser.component for denoiser in self.denoisers()]
        calls = [self.encode_call(pipe, call, device) for call in calls]
        records = record_generations(pipe, components, calls, self.seed(config), device)
        del pipe
        return records
