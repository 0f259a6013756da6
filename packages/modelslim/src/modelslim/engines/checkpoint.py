"""A saved checkpoint as a serving engine sees it: description, config.json and tensor headers (no weights read).

Both layouts are recognised: ascendv1 (`quant_model_description.json`, `quant_model_weights*.safetensors`)
and MindIE-SD (`quant_model_description[_<type>].json`, `quant_model_weight*.safetensors`). Only headers
are read up front; a tensor's values are read when a check needs them (e.g. whether offsets are zero).
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch
from safetensors import safe_open

ASCENDV1_DESCRIPTION = "quant_model_description.json"
MINDIE_DESCRIPTION_GLOB = "quant_model_description_*.json"

_DTYPES = {
    "BOOL": torch.bool, "U8": torch.uint8, "I8": torch.int8, "I16": torch.int16, "I32": torch.int32,
    "I64": torch.int64, "F16": torch.float16, "BF16": torch.bfloat16, "F32": torch.float32, "F64": torch.float64,
    "F8_E4M3": torch.float8_e4m3fn, "F8_E5M2": torch.float8_e5m2,
}


class NotACheckpoint(ValueError):
    """The directory holds no quantization description."""


@dataclass(frozen=True)
class TensorInfo:
    dtype: torch.dtype
    shape: tuple[int, ...]
    file: Path


@dataclass
class EngineCheckpoint:
    path: Path
    layout: str  # "ascendv1" | "mindie"
    description_file: Path
    description: dict[str, Any]
    config: dict[str, Any]
    tensors: dict[str, TensorInfo] = field(default_factory=dict)

    @classmethod
    def open(cls, path: str | Path) -> "EngineCheckpoint":
        path = Path(path)
        if (path / ASCENDV1_DESCRIPTION).is_file():
            layout, description_file = "ascendv1", path / ASCENDV1_DESCRIPTION
        else:
            found = sorted(path.glob(MINDIE_DESCRIPTION_GLOB))
            if not found:
                raise NotACheckpoint(f"{path} holds no {ASCENDV1_DESCRIPTION} or {MINDIE_DESCRIPTION_GLOB}")
            layout, description_file = "mindie", found[0]
        description = json.loads(description_file.read_text(encoding="utf-8"))
        config_file = path / "config.json"
        config = json.loads(config_file.read_text(encoding="utf-8")) if config_file.is_file() else {}
        checkpoint = cls(path, layout, description_file, description, config)
        for file in sorted(path.glob("*.safetensors")):  # engines load every top-level *.safetensors
            with safe_open(file, framework="pt") as handle:
                for name in handle.keys():
                    piece = handle.get_slice(name)
                    checkpoint.tensors[name] = TensorInfo(_DTYPES[piece.get_dtype()], tuple(piece.get_shape()), file)
        return checkpoint

    def read(self, name: str) -> torch.Tensor:
        with safe_open(self.tensors[name].file, framework="pt") as handle:
            return handle.get_tensor(name)

    @property
    def serving_dtype(self) -> torch.dtype:
        """The dtype the checkpoint was written for: the description's record, else config.json's dtype."""
        recorded = (self.description.get("metadata") or {}).get("serving_dtype") if isinstance(
            self.description.get("metadata"), dict) else None
        name = recorded or self.config.get("torch_dtype") or self.config.get("dtype") or "bfloat16"
        dtype = getattr(torch, str(name), None)
        return dtype if isinstance(dtype, torch.dtype) else torch.bfloat16

    def tags(self) -> dict[str, str]:
        """Per-tensor tags (string values naming a tensor that exists or should)."""
        return {k: v for k, v in self.description.items() if isinstance(v, str) and "." in k
                and not k.endswith(".quant_type")}
