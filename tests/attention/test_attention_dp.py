"""kv_smooth, dynamic_cache and fa3_quant all-reduce their statistics: two CPU ranks write the checkpoint one
process writes."""

from __future__ import annotations

import pytest

from tests.runners.test_data_parallel import W8A8_GROUP, quant, quant_in_process, sha, write_config

ATTENTION = """\
    - type: kv_smooth
""" + W8A8_GROUP + """\
        - type: dynamic_cache
          qconfig: {scope: per_channel, dtype: int8, symmetric: false, method: minmax}
        - type: fa3_quant
"""


@pytest.mark.slow
def test_two_ranks_write_the_single_process_attention_checkpoint(tiny_models, small_calib, tmp_path):
    model = tiny_models("qwen2")
    config = write_config(tmp_path, "attention", ATTENTION, small_calib)
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    mindie = ("--tag", "MindIE")  # FA3 on non-MLA attention is a MindIE LLM layout (vLLM-Ascend refuses it)
    quant_in_process(model, single, config, tags=list(mindie[1:]))
    result = quant(model, parallel, config, "cpu:0,1", extra=mindie)
    assert result.returncode == 0, result.stderr
    assert "Starting 2 data-parallel workers" in result.stderr
    for name in ("quant_model_weights.safetensors", "quant_model_description.json"):
        assert sha(single / name) == sha(parallel / name), name
