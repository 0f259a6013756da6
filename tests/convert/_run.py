"""Running a conversion in-process the way `msmodelslim quant --config_path` does, and reading its output."""

from __future__ import annotations

import json
from pathlib import Path

import torch
from safetensors import safe_open

from modelslim.app.quick_quant import QuantArgs, run_quant


def convert(model: Path, out: Path, config_text: str, model_type: str | None = None) -> Path:
    config = out.parent / f"{out.name}.yaml"
    config.write_text(config_text, encoding="utf-8")
    return run_quant(QuantArgs(str(model), str(out), model_type, config_path=str(config), device="cpu"))


def spec_yaml(body: str) -> str:
    return "apiversion: modelslim_convert\nspec:\n" + "".join(f"  {line}\n" for line in body.strip().splitlines())


def read_all(directory: Path) -> dict[str, torch.Tensor]:
    """Every tensor of every top-level *.safetensors file (what an engine loads)."""
    tensors: dict[str, torch.Tensor] = {}
    for file in sorted(directory.glob("*.safetensors")):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                assert name not in tensors, f"{name} is stored twice"
                tensors[name] = handle.get_tensor(name)
    return tensors


def description(directory: Path) -> dict:
    return json.loads((directory / "quant_model_description.json").read_text(encoding="utf-8"))
