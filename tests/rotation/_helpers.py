"""Applying rotations to in-memory tiny models and comparing logits."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from modelslim_core.models.default import DefaultAdapter
from modelslim_core.rotation.quarot_transform import QuarotSettings, QuarotTransform
from modelslim_core.runtime.context import DeviceSpec, RunContext

TOKENS = torch.tensor([[1, 17, 250, 3, 99, 1000, 42, 7, 512, 64, 8, 300]])


def load(path: Path, dtype: torch.dtype = torch.float32):
    return AutoModelForCausalLM.from_pretrained(path, dtype=dtype, local_files_only=True).eval()


def context_for(path: Path) -> RunContext:
    return RunContext(adapter=DefaultAdapter("tiny", path), model_path=path, save_path=path / "unused",
                      device=DeviceSpec("cpu"), compute_dtype=torch.float32)


@torch.no_grad()
def logits(model) -> torch.Tensor:
    return model(input_ids=TOKENS, use_cache=False).logits.float()


@torch.no_grad()
def apply_quarot(model, context: RunContext, settings: QuarotSettings = QuarotSettings(),
                 hidden: torch.Tensor | None = None) -> QuarotTransform:
    transform = QuarotTransform(context, settings, hidden)
    transform.apply_model(model)
    for unit in context.adapter.units(model):
        transform.apply_unit(unit)
    return transform


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return float((actual - expected).norm() / expected.norm())
