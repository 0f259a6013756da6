"""Smoothing under dp_layer_wise: processors that cannot combine their statistics across ranks are refused
before any work (iter_smooth's identical two-rank checkpoint is tested in tests/runners/test_data_parallel.py)."""

from __future__ import annotations

import time

from tests.runners.test_data_parallel import W8A8_GROUP, quant_refused_in_process, write_config


REFUSED = """\
    - {type: smooth_quant}
    - {type: awq, weight_qconfig: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
    - {type: group, configs: [{type: iter_smooth}, {type: smooth_quant}]}
"""


def test_smoothing_without_distributed_support_is_refused_before_work(tiny_models, small_calib, tmp_path, cli_env,
                                                                      capsys, monkeypatch):
    """smooth_quant and awq (spec §4), and a group holding one of them (the reference lets that pass)."""
    config = write_config(tmp_path, "refused", REFUSED + W8A8_GROUP, small_calib)
    started = time.monotonic()
    result = quant_refused_in_process(tiny_models("qwen2"), tmp_path / "out", config, capsys, monkeypatch)
    assert result.code == 1
    assert "processors awq, group, smooth_quant cannot run data-parallel" in result.stderr
    assert "Traceback" not in result.stderr and "Starting" not in result.stderr
    assert time.monotonic() - started < 60
