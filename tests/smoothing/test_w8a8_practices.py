"""`--quant_type w8a8` smooths first (iter_smooth), then quantizes, for every dense family.

The `default` practice (any other architecture) stays data-free: the default adapter's blocks may not have
the dense subgraph names, and some (absolute-position encoders, T5) cannot be calibrated one block at a time.
"""

from __future__ import annotations

import json

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.debug import load_debug_info
from modelslim_core.practice import PracticeLibrary, select_practice
from modelslim_core.protocol.config import parse_quant_config


@pytest.mark.parametrize("family, model_type, alpha, config_id", [
    ("qwen2", "Qwen2-7B-Instruct", 0.5, "qwen2-w8a8"),
    ("qwen2_5", "Qwen2.5-7B-Instruct", 0.5, "qwen2.5-w8a8"),
    ("qwen3", "Qwen3-8B", 0.5, "qwen3-w8a8"),
    ("llama", "Llama-3.1-8B-Instruct", 0.5, "llama-w8a8"),
])
def test_w8a8_practice_starts_with_iter_smooth(family, model_type, alpha, config_id):
    practice = select_practice(PracticeLibrary.discover(), family, model_type, "w8a8", None).practice
    assert practice.metadata.config_id == config_id
    smoothing, quantization = parse_quant_config(practice.data, str(practice.path)).spec.process
    assert (smoothing.type, smoothing.alpha, smoothing.symmetric) == ("iter_smooth", alpha, True)
    assert smoothing.enable_subgraph_type == ["norm-linear", "linear-linear", "ov", "up-down"]
    assert quantization.type == "group"


def test_default_w8a8_practice_stays_data_free():
    practice = select_practice(PracticeLibrary.discover(), "default", "MyModel-1B", "w8a8", None).practice
    assert [item.type for item in parse_quant_config(practice.data, str(practice.path)).spec.process] == ["linear_quant"]


def test_quant_type_w8a8_smooths_the_tiny_model(tiny_models, tmp_path, cli_env, caplog):
    out = tmp_path / "w8a8"
    with caplog.at_level("INFO", logger="modelslim_core"):
        run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", quant_type="w8a8", device="cpu",
                            debug=True))
    assert "iter_smooth smoothed 8 subgraphs." in caplog.text  # 2 layers × (2 norm-linear, ov, up-down)
    scales = load_debug_info(out)["smooth_scales"]  # --debug: one scale vector per consumer linear
    assert {key.rsplit(".", 2)[-2] for key in scales} == {"q_proj", "k_proj", "v_proj", "o_proj", "gate_proj",
                                                           "up_proj", "down_proj"}
    assert scales["model.layers.1.self_attn.q_proj.scales"].shape == (64,)
    assert torch.equal(scales["model.layers.1.self_attn.q_proj.scales"], scales["model.layers.1.self_attn.v_proj.scales"])
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.0.self_attn.q_proj.weight"] == "W8A8"
    assert not any(name.endswith("norm.bias") for name in description)  # symmetric: no centring biases
