"""Any other diffusers pipeline: its transformer denoiser(s) found from model_index.json, data-free configs only.

A pipeline directory no family adapter claims is still quantizable when the config needs no calibration
data (dynamic or MX activations, online rotation, dynamic FA3): every component whose diffusers class is a
`...Transformer...Model` is a denoiser (several are saved into subdirectories named after their folders),
and its units are the blocks of its `nn.ModuleList`s of `...Block` modules, in definition order. How the
pipeline is run, and so what its denoisers receive, is only known to a family adapter: a config that needs
calibration data is refused with the list of supported model types.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import torch
from torch import nn

from modelslim_core.errors import ConfigError, ModelError
from modelslim_core.protocol.validation import StrictModel
from modelslim_core.runtime.unit import Unit, UnitInput
from modelslim_sd.adapter import Denoiser, DiffusionAdapter, read_json_object

SUPPORTED = "Wan2.1, Wan2.2-T2V-A14B, Wan2.2-I2V-A14B, Wan2.2-TI2V-5B, FLUX.1-dev, HunyuanVideo, Qwen-Image-Edit(-2509)"


class NoInferenceSettings(StrictModel):
    """A pipeline without a family adapter is never run, so it takes no inference settings."""


def _is_denoiser(entry: Any) -> bool:
    return (isinstance(entry, list) and len(entry) == 2 and entry[0] == "diffusers" and isinstance(entry[1], str)
            and "Transformer" in entry[1] and entry[1].endswith("Model"))


class GenericDiffusersAdapter(DiffusionAdapter):
    family = "diffusers"
    model_types = ()
    model_type_prefixes = ()
    inference_config_class = NoInferenceSettings

    @classmethod
    def claims_directory(cls, model_path: Path) -> bool:
        """A diffusers pipeline directory with at least one transformer denoiser."""
        try:
            index = json.loads((Path(model_path) / "model_index.json").read_text(encoding="utf-8"))
        except (OSError, ValueError):
            return False
        return isinstance(index, dict) and any(_is_denoiser(v) for v in index.values())

    pipeline_class_names = ()

    def read_model_config(self) -> dict[str, Any]:
        """model_index.json must name a transformer denoiser; the config of the first one is returned."""
        self.model_index = read_json_object(self.model_path / "model_index.json", "diffusers pipeline directory")
        denoisers = self.denoisers()
        if not denoisers:
            raise ModelError(f"{self.model_path / 'model_index.json'} names no diffusers transformer component.",
                             f"supported model types: {SUPPORTED}.")
        if self.component not in {d.component for d in denoisers}:
            self.component = denoisers[0].component
        return read_json_object(self.model_path / self.component / "config.json", f"{self.component} folder")

    def denoisers(self) -> list[Denoiser]:
        names = [key for key, value in self.model_index.items() if _is_denoiser(value)]
        return [Denoiser(name, name if len(names) > 1 else "") for name in names]

    @property
    def component_class_name(self) -> str:  # type: ignore[override]
        return self.model_index[self.component][1] if self.component in self.model_index else ""

    def units(self, model: nn.Module) -> list[Unit]:
        units: list[Unit] = []
        for attr, child in model.named_children():
            if isinstance(child, nn.ModuleList) and len(child) and "block" in type(child[0]).__name__.lower():
                units += [Unit(f"{attr}.{i}", block, len(units)) for i, block in enumerate(child)]
        if not units:
            raise ModelError(f"{type(model).__name__} has no list of blocks to quantize.",
                             f"supported model types: {SUPPORTED}.")
        return units

    def task_name(self, config: Any) -> str:
        return "generic"

    def capture_settings(self, config: Any) -> dict[str, Any]:
        return {}

    def capture_calibration(self, config: Any, device: torch.device, dtype: torch.dtype) -> dict[str, list[UnitInput]]:
        raise ConfigError(
            f"model type {self.model_type!r} has no generation adapter, so its pipeline cannot be run to capture "
            "calibration data, and this config needs some.",
            f"use data-free processors only (dynamic or MX activations, online_quarot, dynamic fa3_quant), or one "
            f"of the supported model types: {SUPPORTED}.",
        )
