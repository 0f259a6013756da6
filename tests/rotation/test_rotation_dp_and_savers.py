"""Rotation under data parallelism (same checkpoint as one process) and with the MindIE saver."""

from __future__ import annotations

import json

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import ConfigError
from modelslim_core.reference_runtime import load_quantized_model
from tests.rotation._helpers import load, logits, relative_error
from tests.runners.test_data_parallel import quant, sha, write_config
from tests.tiny_models import make_tiny_model
from tests.quant_runs import ONLINE_ROTATIONS_TARGET

ADAPT_AND_W8A8 = """\
    - {type: adapt_rotation, stage: 2, online: true, max_tp_size: 2}
    - type: linear_quant
      qconfig:
        act: {scope: per_tensor, dtype: int8, symmetric: false, method: minmax}
        weight: {scope: per_channel, dtype: int8, symmetric: true, method: minmax}
      include: ["model.layers.*"]
"""
PRIOR = "  prior:\n    - process: [{type: adapt_rotation, stage: 1, steps: 4, layer_type: [gate_proj, up_proj]}]\n"


def test_two_ranks_learn_and_write_the_single_process_checkpoint(tiny_models, small_calib, tmp_path, cli_env):
    model = tiny_models("qwen2")
    config = write_config(tmp_path, "adapt", ADAPT_AND_W8A8, small_calib)
    config.write_text(config.read_text().replace("  process:\n", PRIOR + "  process:\n", 1))
    single, parallel = tmp_path / "single", tmp_path / "parallel"
    run_quant(QuantArgs(str(model), str(single), "Qwen2-demo", config_path=str(config), device="cpu", tags=ONLINE_ROTATIONS_TARGET))
    result = quant(model, parallel, config, "cpu:0,1", extra=("--tag", *ONLINE_ROTATIONS_TARGET))
    assert result.returncode == 0, result.stderr
    assert "Starting 2 data-parallel workers" in result.stderr
    for name in ("quant_model_weights.safetensors", "quant_model_description.json"):
        assert sha(single / name) == sha(parallel / name), name


def test_mindie_saver_refuses_rotation_extras(tiny_models, small_calib, tmp_path, cli_env):
    config = tmp_path / "mindie.yaml"
    config.write_text(f"""\
apiversion: modelslim_v1
spec:
  process: [{{type: quarot}}]
  save: [{{type: mindie_format_saver}}]
  dataset: {small_calib}
""")
    with pytest.raises(ConfigError, match=r"mindie_format_saver cannot write QUAROT .*spec.process\[0\]"):
        run_quant(QuantArgs(str(tiny_models("qwen2")), str(tmp_path / "out"), "Qwen2-demo", config_path=str(config), device="cpu"))


def test_mindie_saver_keeps_offline_rotation_untied(tmp_path, small_calib, cli_env):
    model_dir = make_tiny_model(tmp_path / "tied", "qwen2", torch.float32, tie_word_embeddings=True)
    config = tmp_path / "mindie.yaml"
    config.write_text(f"""\
apiversion: modelslim_v1
spec:
  process:
    - {{type: quarot, export_extra_info: false}}
    - type: linear_quant
      qconfig:
        act: {{scope: per_token, dtype: int8, symmetric: true, method: minmax}}
        weight: {{scope: per_channel, dtype: int8, symmetric: true, method: minmax}}
      include: ["model.layers.*"]
  save: [{{type: mindie_format_saver}}]
  dataset: {small_calib}
""")
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config), device="cpu"))
    assert json.loads((out / "config.json").read_text())["tie_word_embeddings"] is False
