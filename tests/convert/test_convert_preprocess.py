"""rename / chunk / merge preprocessing: names rewritten, fused tensors split and joined, before the targets."""

from __future__ import annotations

import torch

from tests.convert._run import convert, description, read_all, spec_yaml
from tests.convert.checkpoints import INTER, config_json, float_tensors, linear_shapes, write


def float_checkpoint(directory, fused_gate_up=False, mlp_name="mlp"):
    """A bf16 Qwen3-shaped checkpoint; optionally gate/up fused into one [2*inter, hidden] tensor, and the MLP
    stored under another module name (as MiniMax-M2 stores `block_sparse_moe`)."""
    g = torch.Generator().manual_seed(5)
    tensors = float_tensors()
    weights = {f"{name}.weight": (torch.randn(*shape, generator=g) * 0.02).bfloat16() for name, shape in linear_shapes().items()}
    stored = dict(weights)
    if fused_gate_up:
        for layer in range(2):
            p = f"model.layers.{layer}.mlp"
            stored[f"{p}.gate_up_proj.weight"] = torch.cat([stored.pop(f"{p}.gate_proj.weight"), stored.pop(f"{p}.up_proj.weight")])
    stored = {name.replace(".mlp.", f".{mlp_name}."): value for name, value in stored.items()}
    return write(directory, {**tensors, **stored}, config_json(None)), weights


def test_chunk_splits_fused_gate_up_for_transformers(tmp_path):
    from transformers import AutoModelForCausalLM

    model, weights = float_checkpoint(tmp_path / "src", fused_gate_up=True)
    out = convert(model, tmp_path / "out", spec_yaml("""
preprocess:
  - type: convert
    source: 'model.layers.*.mlp.gate_up_proj.weight'
    target: ['model.layers.*.mlp.gate_proj.weight', 'model.layers.*.mlp.up_proj.weight']
    ops: [{type: chunk, dim: 0}]
save: [{type: hf}]
"""))
    state = AutoModelForCausalLM.from_pretrained(out, dtype=torch.bfloat16).state_dict()
    for name, value in weights.items():
        assert torch.equal(state[name], value), name
    assert "model.layers.0.mlp.gate_up_proj.weight" not in read_all(out)


def test_merge_joins_and_rename_moves_then_targets_apply(tmp_path):
    model, weights = float_checkpoint(tmp_path / "src", mlp_name="block_sparse_moe")
    out = convert(model, tmp_path / "out", spec_yaml("""
preprocess:
  - type: rename
    patterns: [{from: '\\.block_sparse_moe\\.', to: '.mlp.'}]
  - type: convert
    source: ['model.layers.*.mlp.gate_proj.weight', 'model.layers.*.mlp.up_proj.weight']
    target: 'model.layers.*.mlp.gate_up_proj.weight'
    ops: [{type: merge}]
linears:
  - {match: ['*.gate_up_proj'], target: W8A8_MXFP8}
"""))
    saved = read_all(out)
    tags = description(out)
    assert not [n for n in saved if "block_sparse_moe" in n]
    fused = "model.layers.1.mlp.gate_up_proj"
    assert saved[f"{fused}.weight"].shape == (2 * INTER, 256) and tags[f"{fused}.weight"] == "W8A8_MXFP8"
    from modelslim_core.quant.mx import MXFP8, mx_quantize

    joined = torch.cat([weights["model.layers.1.mlp.gate_proj.weight"], weights["model.layers.1.mlp.up_proj.weight"]])
    assert torch.equal(saved[f"{fused}.weight"].float(), mx_quantize(joined, MXFP8)[0])
    assert torch.equal(saved["model.layers.1.mlp.down_proj.weight"], weights["model.layers.1.mlp.down_proj.weight"])
    assert "model.layers.0.mlp.gate_proj.weight" not in saved
