"""Driving attention processors on a whole float model in a test (no runner): each unit is tapped while the
full model runs on a few inputs, as the runner would run that unit on its captured inputs."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from modelslim_core.models.default import DefaultAdapter
from modelslim_core.runtime.context import DeviceSpec, RunContext

TOKENS = torch.randint(5, 1000, (2, 24), generator=torch.Generator().manual_seed(0))


def float_model(path: Path, attn: str = "sdpa") -> torch.nn.Module:
    return AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, attn_implementation=attn).eval()


def context_for(path: Path) -> RunContext:
    return RunContext(DefaultAdapter("test", path), path, path / "unused", DeviceSpec("cpu"), torch.float32)


@torch.no_grad()
def run_processor(processor, model: torch.nn.Module, tokens: torch.Tensor = TOKENS) -> None:
    processor.pre_run(model)
    for unit in processor.context.adapter.units(model):
        processor.preprocess(unit)
        if processor.needs_forward(unit):
            for row in tokens:
                model(input_ids=row[None])
        processor.postprocess(unit)
    processor.post_run()
