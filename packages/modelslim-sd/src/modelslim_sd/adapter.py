"""The base adapter of diffusion pipelines stored in the diffusers layout.

A diffusers pipeline directory holds `model_index.json` (the pipeline class and one entry per component)
and a folder per component. One component — the diffusion transformer (DiT) — is quantized; its blocks are
the units. Calibration samples are not texts but recorded calls of that component (its positional and
keyword arguments), which `forward_sample` replays. A family adapter adds its inference settings and the
way it runs its pipeline to record those calls.
"""

from __future__ import annotations

import json
from abc import ABC, abstractmethod
from collections import Counter
from pathlib import Path
from typing import Any, ClassVar

import torch
from pydantic import BaseModel
from safetensors import safe_open
from torch import nn

from modelslim_core.errors import ConfigError, ModelError
from modelslim_core.models.base import ModelAdapter
from modelslim_core.protocol.validation import describe_fields, validate
from modelslim_core.runtime.unit import Unit, UnitInput
from modelslim_runners.placement import move

_SAFETENSORS_DTYPES = {"BF16": torch.bfloat16, "F16": torch.float16, "F32": torch.float32}

_LAYOUT_HINT = (
    "point --model_path at a diffusers-format pipeline directory: model_index.json plus one folder per "
    "component (transformer/, vae/, text_encoder/, tokenizer/, scheduler/)."
)


def read_json_object(path: Path, what: str) -> dict[str, Any]:
    """A JSON object from `path`, or a ModelError naming the file."""
    if not path.is_file():
        raise ModelError(f"{path} does not exist, so the directory is not a {what}.", _LAYOUT_HINT)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path} cannot be read as JSON: {exc}.", _LAYOUT_HINT) from None
    if not isinstance(data, dict):
        raise ModelError(f"{path} must hold a JSON object.", _LAYOUT_HINT)
    return data


class DiffusionAdapter(ModelAdapter, ABC):
    """A diffusers pipeline whose `component` (a DiT with a `blocks` list) is quantized block by block."""

    apiversions = ("multimodal_sd_modelslim_v1",)
    #: `_class_name` in model_index.json, and the quantized component's folder and diffusers class.
    pipeline_class_name: ClassVar[str]
    component: ClassVar[str] = "transformer"
    component_class_name: ClassVar[str]
    #: Attribute of the component holding its blocks (the units).
    blocks_attr: ClassVar[str] = "blocks"
    #: The pydantic model of the family's inference settings (`model_config` / `inference_config`).
    inference_config_class: ClassVar[type[BaseModel]]

    # --- the directory ------------------------------------------------------------------------------------
    def read_model_config(self) -> dict[str, Any]:
        """Check model_index.json names this family's pipeline and component; return the component's config."""
        index = read_json_object(self.model_path / "model_index.json", "diffusers pipeline directory")
        self.model_index = index
        if index.get("_class_name") != self.pipeline_class_name:
            raise ModelError(
                f"{self.model_path / 'model_index.json'} describes a {index.get('_class_name')!r} pipeline, "
                f"but model type {self.model_type!r} needs a {self.pipeline_class_name}.",
                "check --model_type and --model_path.",
            )
        entry = index.get(self.component)
        if not (isinstance(entry, list) and len(entry) == 2 and entry[1] == self.component_class_name):
            raise ModelError(
                f"{self.model_path / 'model_index.json'}: component {self.component!r} is {entry!r}, "
                f"expected [\"diffusers\", \"{self.component_class_name}\"].",
                _LAYOUT_HINT,
            )
        return read_json_object(self.checkpoint_dir / "config.json", f"{self.component} folder")

    @property
    def checkpoint_dir(self) -> Path:
        return self.model_path / self.component

    @property
    def source_dtype(self) -> torch.dtype | None:
        """The most common float dtype among the component's stored tensors (its config does not say)."""
        counts: Counter[torch.dtype] = Counter()
        for path in sorted(self.checkpoint_dir.glob("*.safetensors")):
            with safe_open(path, framework="pt") as handle:
                for key in handle.keys():
                    dtype = _SAFETENSORS_DTYPES.get(handle.get_slice(key).get_dtype())
                    if dtype is not None:
                        counts[dtype] += 1
        return counts.most_common(1)[0][0] if counts else None

    # --- loading ------------------------------------------------------------------------------------------
    def component_class(self) -> type[nn.Module]:
        import diffusers

        return getattr(diffusers, self.component_class_name)

    def load_model(self, dtype: torch.dtype) -> nn.Module:
        """The quantized component alone (the rest of the pipeline is only needed to capture its inputs)."""
        try:
            model = self.component_class().from_pretrained(
                self.model_path, subfolder=self.component, dtype=dtype, local_files_only=True
            )
        except Exception as exc:
            raise ModelError(
                f"cannot load {self.component_class_name} from {str(self.checkpoint_dir)!r}: {exc}",
                "check that the folder holds the component's config.json and *.safetensors weights.",
            ) from None
        model.eval()
        model.requires_grad_(False)
        return model

    # --- structure ----------------------------------------------------------------------------------------
    def units(self, model: nn.Module) -> list[Unit]:
        blocks = getattr(model, self.blocks_attr, None)
        if not isinstance(blocks, nn.ModuleList) or not len(blocks):
            raise ModelError(
                f"{type(model).__name__} has no `{self.blocks_attr}` block list.",
                "this architecture needs its own diffusion adapter.",
            )
        return [Unit(name=f"{self.blocks_attr}.{i}", module=block, index=i) for i, block in enumerate(blocks)]

    # --- calibration data ---------------------------------------------------------------------------------
    def tokenize(self, texts: list[str]) -> list[Any]:
        raise ConfigError(
            f"model type {self.model_type!r} is calibrated from its own pipeline's transformer calls, not from a "
            "text dataset.",
            "use apiversion multimodal_sd_modelslim_v1 and put the prompts in multimodal_sd_config.model_config.",
        )

    def forward_sample(self, model: nn.Module, sample: UnitInput, device: torch.device) -> Any:
        """Replay one recorded call of the component."""
        return model(*move(sample.args, device), **move(sample.kwargs, device))

    def parse_inference_config(self, raw: dict[str, Any], path: str) -> BaseModel:
        """Validate the inference settings; an error lists every valid field and its range."""
        cls = self.inference_config_class
        return validate(cls, raw, path, hint=f"valid fields of {path}: {describe_fields(cls)}.")

    @abstractmethod
    def calibration_file_name(self, config: Any) -> str:
        """One file per task and component, so runs of other tasks or experts never read each other's data."""

    @abstractmethod
    def capture_settings(self, config: Any) -> dict[str, Any]:
        """The settings the recorded calls depend on (JSON values): part of the calibration fingerprint."""

    @abstractmethod
    def capture_calibration(self, config: Any, device: torch.device, dtype: torch.dtype) -> list[UnitInput]:
        """Run the float pipeline once per prompt and return every call of the component, on the CPU."""
