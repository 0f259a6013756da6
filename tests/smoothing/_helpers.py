"""Running smoothing processors in-process on a loaded model, through the real unit pipeline."""

from __future__ import annotations

import copy
from pathlib import Path

import torch
from torch import nn

from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.resolve import create_adapter
from modelslim_core.protocol.spec import parse_processor_list
from modelslim_core.runtime.context import DeviceSpec, RunContext
from modelslim_core.runtime.runner import Stage
from modelslim_runners.pipeline import UnitPipeline
from modelslim_runners.placement import Placement

#: A model type of each tiny architecture's family (tests/tiny_models.py), which picks its adapter.
MODEL_TYPES = {"qwen2": "Qwen2-demo", "qwen3": "Qwen3-8B", "llama": "Llama-3-8B", "qwen3_moe": "Qwen3-30B-A3B",
               "deepseek_v3": "DeepSeek-V3"}

EVAL_TEXTS = [
    "Smoothing moves outliers from activations into weights.",
    "1, 1, 2, 3, 5, 8, 13, 21, 34",
    "今天天气很好，我们去公园散步吧。",
]

#: One config per smoothing processor, as a user would write it (awq/flex_awq_ssz need their qconfig).
W8A8_DYNAMIC = {"act": {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"},
                "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}}
SMOOTHERS: dict[str, dict] = {
    "smooth_quant": {"type": "smooth_quant"},
    "iter_smooth": {"type": "iter_smooth"},
    "iter_smooth_asym": {"type": "iter_smooth", "symmetric": False},
    "flex_smooth_quant": {"type": "flex_smooth_quant"},
    "flex_awq_ssz": {"type": "flex_awq_ssz", "qconfig": W8A8_DYNAMIC},
    "awq": {"type": "awq", "weight_qconfig": W8A8_DYNAMIC["weight"], "n_grid": 10},
}


class GivenModel(Placement):
    """Model-wise placement of a model the test already holds (so the test can inspect it afterwards)."""

    def __init__(self, context: RunContext, model: nn.Module):
        super().__init__(context)
        self.model = model

    def load(self, adapter: ModelAdapter) -> nn.Module:
        return self.model


def context_for(model_dir: Path, arch: str, dtype: torch.dtype = torch.float32) -> RunContext:
    adapter = create_adapter(MODEL_TYPES[arch], model_dir, False)
    return RunContext(adapter=adapter, model_path=model_dir, save_path=model_dir / "unused", device=DeviceSpec("cpu"),
                      compute_dtype=dtype)


def run_processors(model: nn.Module, model_dir: Path, arch: str, process: list[dict], calib: Path) -> RunContext:
    """Run `process` (YAML-like dicts) over `model` in place, with calibration texts from `calib`."""
    dtype = next(model.parameters()).dtype
    context = context_for(model_dir, arch, dtype)
    configs = parse_processor_list(copy.deepcopy(process), "spec.process")
    UnitPipeline(context, GivenModel(context, model)).run([Stage("process", configs, [], dataset=str(calib))])
    return context


@torch.no_grad()
def logits(model: nn.Module, adapter: ModelAdapter, texts: list[str] = EVAL_TEXTS) -> torch.Tensor:
    """Concatenated next-token logits (float32) of the evaluation texts."""
    outs = [model(**sample, use_cache=False).logits[0].float() for sample in adapter.tokenize(texts)]
    return torch.cat(outs)


def relative_error(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).norm() / exact.norm())
