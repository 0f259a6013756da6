"""MoE checkpoints against vLLM-Ascend 0.23.0's real fused-MoE schemes (W8A8_DYNAMIC and W4A8_DYNAMIC): their
constructors and `create_weights` run (the expert-parallel communication group is absent, as in one process),
and every expert's tensors land in the `w13_*` / `w2_*` parameters under the names the engine maps."""

from __future__ import annotations

import pytest
import torch

from modelslim.engines import vllm_ascend
from modelslim.engines.checkpoint import EngineCheckpoint
from tests.engines._harness import problems
from tests.engines._practices import run_practice
from tests.quant_runs import corrupt

EXPERT = "model.layers.0.mlp.experts.1"


@pytest.fixture(scope="module")
def moe_w4a8(family_model, sweep_dataset, tmp_path_factory):
    """Qwen3-MoE W4A8: experts W4A8_DYNAMIC (last layer's W8A8_DYNAMIC), attention W8A8_DYNAMIC."""
    return run_practice("qwen3_moe/qwen3_moe-30b-w4a8.yaml", family_model, sweep_dataset,
                        tmp_path_factory.mktemp("moe-w4a8"))


def test_the_engine_allocates_every_expert_tensor_we_write(moe_w4a8):
    checkpoint = EngineCheckpoint.open(moe_w4a8)
    assert checkpoint.tags()[f"{EXPERT}.gate_proj.weight"] == "W4A8_DYNAMIC"
    assert checkpoint.tags()["model.layers.1.mlp.experts.1.gate_proj.weight"] == "W8A8_DYNAMIC"
    assert problems(moe_w4a8) == []


def test_the_real_moe_schemes_allocate_fused_expert_parameters(moe_w4a8):
    """What the engine's own W4A8_DYNAMIC MoE scheme allocates for this layer: int8 w13/w2 weights with the
    scale_bias its kernel reads (not our reading of it)."""
    checkpoint = EngineCheckpoint.open(moe_w4a8)
    with vllm_ascend._engine(checkpoint, "default") as (quant_config, _):
        layer = vllm_ascend.LAYER_CLASSES["FusedMoE"]()
        layer.moe_config = type("MoE", (), {"num_logical_experts": 4, "num_experts": 4})()
        method = quant_config.get_quant_method(layer, "model.layers.0.mlp.experts")
        method.create_weights(layer, 4, 64, 32, checkpoint.serving_dtype)
        params = dict(layer.named_parameters())
    assert {"w13_weight", "w2_weight", "w13_weight_scale", "w2_weight_scale", "w13_scale_bias", "w2_scale_bias"} <= set(params)
    assert params["w13_weight"].dtype == torch.int8
    assert tuple(params["w13_weight"].shape[:1]) == (4,)


@pytest.mark.parametrize("edit, where, expected", [
    (lambda t, d: t.pop(f"{EXPERT}.up_proj.scale_bias"), f"{EXPERT}.up_proj.scale_bias",
     "reads w13_scale_bias for every expert, but this expert's tensor is missing"),
    (lambda t, d: t.__setitem__(f"{EXPERT}.down_proj.weight_scale", torch.ones(64, 2)),
     f"{EXPERT}.down_proj.weight_scale", "shape [64, 2], but vLLM-Ascend's W4A8_DYNAMIC scheme allocates [64, 1]"),
    (lambda t, d: [t.__setitem__(k.replace(".gate_proj.", ".w1."), t.pop(k)) for k in list(t) if ".gate_proj." in k
                   and ".experts." in k] and [d.__setitem__(k.replace(".gate_proj.", ".w1."), d.pop(k)) for k in list(d)
                                             if ".gate_proj." in k and ".experts." in k],
     "model.layers.0.mlp.experts", "expert projections named w1; vLLM-Ascend loads this model's experts as gate_proj"),
])
def test_the_harness_catches_expert_mismatches(moe_w4a8, tmp_path, edit, where, expected):
    found = problems(corrupt(moe_w4a8, tmp_path, edit))
    assert any(expected in line for line in found if f": {where}: " in line), "\n".join(found)


@pytest.mark.parametrize("practice", ["deepseek_v3/deepseek_v3-w4a8.yaml", "qwen3_moe/qwen3_moe-w8a8.yaml"])
def test_moe_practices_load(practice, family_model, sweep_dataset, tmp_path):
    out = run_practice(practice, family_model, sweep_dataset, tmp_path)
    experts = [tag for name, tag in EngineCheckpoint.open(out).tags().items() if ".experts." in name]
    assert experts and problems(out) == []
