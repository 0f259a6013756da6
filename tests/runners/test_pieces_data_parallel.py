"""Layers processed in pieces under dp_layer_wise (two CPU ranks, gloo): every rank walks the same pieces (a dense
layer's attention block and MLP; a MoE layer's trunk and one routed expert at a time) over its own samples, and
the checkpoint is the one a single process writes with whole layers."""

from __future__ import annotations

import pytest

from tests.runners.test_data_parallel import quant, sha, write_config

PROCESS = """\
    - {type: iter_smooth, alpha: 0.5}
    - type: linear_quant
      qconfig:
        act: {scope: per_tensor, dtype: int8, symmetric: false, method: minmax}
        weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
      exclude: ["*kv_b_proj"]
"""


@pytest.mark.slow
def test_two_ranks_in_pieces_write_the_single_process_checkpoint(tiny_models, small_calib, tmp_path):
    model = tiny_models("deepseek_v3")  # layer 0 dense, layers 1-2 with 4 routed experts and a shared expert
    config = write_config(tmp_path, "w8a8", PROCESS, small_calib)
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    args = ("--model_type", "DeepSeek-V3")
    done = quant(model, single, config, "cpu", extra=args)
    assert done.returncode == 0, done.stderr
    pieces = {"MSMODELSLIM_DENSE_PIECES": "1", "MSMODELSLIM_EXPERTS_PER_PIECE": "1"}
    result = quant(model, parallel, config, "cpu:0,1", env=pieces, extra=args)
    assert result.returncode == 0, result.stderr
    assert "Starting 2 data-parallel workers" in result.stderr
    assert "model.layers.0 is processed in pieces: its attention block, then its MLP" in result.stderr
    assert "model.layers.1 is processed in pieces: its trunk, then 1 routed experts at a time" in result.stderr
    names = [p.name for p in single.iterdir() if p.suffix in (".safetensors", ".json") and p.name != "quant_report.json"]
    assert "quant_model_weights.safetensors" in names
    for name in names:
        assert sha(single / name) == sha(parallel / name), name
