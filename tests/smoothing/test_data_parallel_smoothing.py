"""Smoothing under dp_layer_wise on two CPU ranks: iter_smooth gives the single-process checkpoint; the
processors that cannot combine their statistics across ranks are refused before any work."""

from __future__ import annotations

import time

from tests.runners.test_data_parallel import W8A8_GROUP, quant, sha, write_config


def test_iter_smooth_on_two_cpu_ranks_writes_the_single_process_checkpoint(tiny_models, small_calib, tmp_path):
    model = tiny_models("qwen2")
    config = write_config(tmp_path, "iter", "    - {type: iter_smooth, symmetric: false}\n" + W8A8_GROUP, small_calib)
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    assert quant(model, single, config, "cpu").returncode == 0
    result = quant(model, parallel, config, "cpu:0,1")
    assert result.returncode == 0, result.stderr
    assert "Starting 2 data-parallel workers" in result.stderr and "iter_smooth smoothed 8 subgraphs" in result.stderr
    for name in ("quant_model_weights.safetensors", "quant_model_description.json"):
        assert sha(single / name) == sha(parallel / name), name


REFUSED = """\
    - {type: smooth_quant}
    - {type: awq, weight_qconfig: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
    - {type: group, configs: [{type: iter_smooth}, {type: smooth_quant}]}
"""


def test_smoothing_without_distributed_support_is_refused_before_work(tiny_models, small_calib, tmp_path):
    """smooth_quant and awq (spec §4), and a group holding one of them (the reference lets that pass)."""
    config = write_config(tmp_path, "refused", REFUSED + W8A8_GROUP, small_calib)
    started = time.monotonic()
    result = quant(tiny_models("qwen2"), tmp_path / "out", config, "cpu:0,1")
    assert result.returncode == 1
    assert "processors awq, group, smooth_quant cannot run data-parallel" in result.stderr
    assert "Traceback" not in result.stderr and "Starting" not in result.stderr
    assert time.monotonic() - started < 60
