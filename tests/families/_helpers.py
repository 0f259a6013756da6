"""Quantize-and-reload helpers shared by the family tests."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.moe._helpers import quantize, saved  # noqa: F401 - re-exported for the family tests

IDS = torch.arange(3, 60).reshape(1, -1)
DYNAMIC = "{scope: per_token, dtype: int8, symmetric: true, method: minmax}"
WEIGHT = "{scope: per_channel, dtype: int8, symmetric: true, method: minmax}"


def dynamic_w8a8_config(tmp_path: Path, runner: str = "model_wise", include: str = "*") -> Path:
    """A data-free W8A8_DYNAMIC config over every linear site the adapter offers."""
    config = tmp_path / "w8a8-dynamic.yaml"
    config.write_text(f"apiversion: modelslim_v1\nspec:\n  runner: {runner}\n  process:\n"
                      f"    - {{type: linear_quant, qconfig: {{act: {DYNAMIC}, weight: {WEIGHT}}}, include: [{include!r}]}}\n"
                      "  save: [{type: ascendv1_saver, part_file_size: 0}]\n", encoding="utf-8")
    return config


def float_relative_error(model_dir: Path, out: Path, ids: torch.Tensor = IDS) -> float:
    """Relative logits error of the reloaded checkpoint (reference runtime) against the float model."""
    from transformers import AutoModelForCausalLM

    from modelslim_core.reference_runtime import load_quantized_model

    with torch.no_grad():
        reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(input_ids=ids).logits
        logits = load_quantized_model(model_dir, out)(input_ids=ids).logits
    return ((logits - reference).norm() / reference.norm()).item()
