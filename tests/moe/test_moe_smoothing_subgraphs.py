"""Smoothing subgraphs of the MoE families (active once the smoothing processors are part of the package)."""

from __future__ import annotations

import pytest
import torch

pytest.importorskip("modelslim_core.models.subgraphs")

from modelslim_core.models.resolve import create_adapter  # noqa: E402


def pairs(arch: str, model_type: str, tiny_models, layer: int) -> set[tuple[str, str, tuple[str, ...]]]:
    path = tiny_models(arch, torch.float32)
    adapter = create_adapter(model_type, path, False)
    model = adapter.load_model(torch.float32)
    unit = adapter.units(model)[layer]
    return {(g.kind, g.source_name.removeprefix(unit.name + "."),
             tuple(t.removeprefix(unit.name + ".") for t in g.target_names)) for g in adapter.smoothing_subgraphs(unit)}


def test_qwen3_moe_pairs_are_attention_plus_one_up_down_per_expert(tiny_models):
    found = pairs("qwen3_moe", "Qwen3-30B-A3B", tiny_models, 0)
    assert ("norm-linear", "input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")) in found
    assert ("ov", "self_attn.v_proj", ("self_attn.o_proj",)) in found
    for e in range(4):
        assert ("up-down", f"mlp.experts.{e}.up_proj", (f"mlp.experts.{e}.down_proj",)) in found
    assert not [p for p in found if p[1] == "post_attention_layernorm"]  # the router reads that norm too
    assert len(found) == 2 + 4


def test_deepseek_pairs_cover_mla_shared_experts_and_the_dense_layer(tiny_models):
    dense = pairs("deepseek_v3", "DeepSeek-V3", tiny_models, 0)
    assert ("up-down", "mlp.up_proj", ("mlp.down_proj",)) in dense
    assert ("norm-linear", "post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")) in dense
    moe = pairs("deepseek_v3", "DeepSeek-V3", tiny_models, 1)
    assert ("norm-linear", "input_layernorm", ("self_attn.q_a_proj", "self_attn.kv_a_proj_with_mqa")) in moe
    assert ("norm-linear", "self_attn.q_a_layernorm", ("self_attn.q_b_proj",)) in moe
    assert ("up-down", "mlp.shared_experts.up_proj", ("mlp.shared_experts.down_proj",)) in moe
    assert {p for p in moe if p[1].startswith("mlp.experts.")} == {
        ("up-down", f"mlp.experts.{e}.up_proj", (f"mlp.experts.{e}.down_proj",)) for e in range(4)}
    assert not [p for p in moe if p[1] == "post_attention_layernorm"]
