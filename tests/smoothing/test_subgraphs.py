"""The adapters' smoothing subgraphs, and include/exclude selecting subgraphs by their source module."""

from __future__ import annotations

import copy

import pytest
import torch

from tests.smoothing._helpers import context_for, run_processors


@pytest.mark.parametrize("arch", ["qwen2", "qwen3", "llama"])
def test_dense_layers_declare_four_subgraphs(tiny_models, arch):
    adapter = context_for(tiny_models(arch, torch.float32), arch).adapter
    model = adapter.load_model(torch.float32)
    unit = adapter.units(model)[1]
    found = {(sg.kind, sg.source_name): sg for sg in adapter.smoothing_subgraphs(unit)}
    p = "model.layers.1"
    assert set(found) == {("norm-linear", f"{p}.input_layernorm"), ("ov", f"{p}.self_attn.v_proj"),
                          ("norm-linear", f"{p}.post_attention_layernorm"), ("up-down", f"{p}.mlp.up_proj")}
    assert found[("norm-linear", f"{p}.input_layernorm")].target_names == (
        f"{p}.self_attn.q_proj", f"{p}.self_attn.k_proj", f"{p}.self_attn.v_proj")
    ov = found[("ov", f"{p}.self_attn.v_proj")]
    assert (ov.target_names, ov.num_heads, ov.num_kv_heads, ov.head_dim) == ((f"{p}.self_attn.o_proj",), 4, 2, 16)


def test_include_and_exclude_match_the_source_module(tiny_models, small_calib):
    path = tiny_models("qwen2", torch.float32)
    adapter = context_for(path, "qwen2").adapter
    model = adapter.load_model(torch.float32)
    original = copy.deepcopy(model)
    run_processors(model, path, "qwen2", [{"type": "iter_smooth", "include": ["*post_attention_layernorm", "*.v_proj"],
                                           "exclude": ["model.layers.0.*"]}], small_calib)
    changed = {name for (name, p), q in zip(model.named_parameters(), original.parameters()) if not torch.equal(p, q)}
    assert changed == {
        "model.layers.1.post_attention_layernorm.weight", "model.layers.1.mlp.gate_proj.weight",
        "model.layers.1.mlp.up_proj.weight",  # consumer of post_attention_layernorm (up_proj as a source is not included)
        "model.layers.1.self_attn.v_proj.weight", "model.layers.1.self_attn.v_proj.bias",
        "model.layers.1.self_attn.o_proj.weight",
    }
