"""Static activation ranges far above their peers': found by role, said in the log and in quant_report.json."""

from __future__ import annotations

import json
import logging

import pytest
import torch
from safetensors.torch import load_file, save_file

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.quant.act_outliers import OUTLIER_FACTOR, find_outliers, role_of
from tests.quant_runs import STATIC_ACT, WEIGHT_SYM
from tests.tiny_models import make_tiny_model


def test_roles_drop_layer_indices_only():
    assert role_of("model.layers.12.mlp.down_proj") == "model.layers.*.mlp.down_proj"
    assert role_of("model.layers.3.mlp.experts.7.w2") == "model.layers.*.mlp.experts.*.w2"
    assert role_of("model.layers.1.self_attn.q_proj") != role_of("model.layers.1.self_attn.o_proj")


def test_one_layer_far_above_its_peers_is_flagged_with_the_factor():
    steps = {f"model.layers.{i}.mlp.down_proj": 0.01 * (1 + i % 3) for i in range(8)}
    steps["model.layers.5.mlp.down_proj"] = 4.0
    steps |= {f"model.layers.{i}.self_attn.o_proj": 0.02 for i in range(8)}
    (outlier,) = find_outliers(steps)
    assert outlier.name == "model.layers.5.mlp.down_proj" and outlier.peers == 7
    assert outlier.peer_median_step == pytest.approx(0.02) and outlier.factor == pytest.approx(200)
    assert "200x the median of its 7 peers" in outlier.message()


def test_ranges_within_the_factor_or_without_enough_peers_are_not_flagged():
    steps = {f"model.layers.{i}.mlp.down_proj": 0.01 for i in range(6)}
    steps["model.layers.2.mlp.down_proj"] = 0.01 * (OUTLIER_FACTOR - 1)
    steps |= {"model.layers.0.mlp.gate_proj": 0.01, "model.layers.1.mlp.gate_proj": 5.0}  # two members: no verdict
    assert find_outliers(steps) == []


def test_a_static_run_names_the_outlier_layer_in_the_log_and_the_report(tmp_path, cli_env, small_calib, caplog):
    model = make_tiny_model(tmp_path / "model", "llama", torch.float32, num_hidden_layers=5)
    weights = load_file(model / "model.safetensors")
    weights["model.layers.3.mlp.up_proj.weight"] *= 1000.0  # layer 3's down_proj now reads ~1000x larger inputs
    save_file(weights, model / "model.safetensors", metadata={"format": "pt"})
    config = tmp_path / "static.yaml"
    config.write_text(f"""\
apiversion: modelslim_v1
spec:
  process:
    - {{type: linear_quant, qconfig: {{act: {STATIC_ACT}, weight: {WEIGHT_SYM}}}, include: ["*mlp*"]}}
  save: [{{type: ascendv1_saver}}]
  dataset: {small_calib}
""")
    out = tmp_path / "out"
    with caplog.at_level(logging.WARNING, logger="modelslim_core"):
        run_quant(QuantArgs(str(model), str(out), "Qwen2-demo", config_path=str(config), device="cpu"))
    report = json.loads((out / "quant_report.json").read_text())["activation_outliers"]
    assert list(report) == ["model.layers.3.mlp.down_proj"]
    assert report["model.layers.3.mlp.down_proj"]["factor"] > 100
    assert "model.layers.3.mlp.down_proj: static activation step" in caplog.text and "per_token" in caplog.text
