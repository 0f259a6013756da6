"""`msmodelslim analyze`: units, ranking against brute force on an outlier-injected model, outputs, bad input."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

import torch
from transformers import AutoModelForCausalLM

from modelslim_core.reference_runtime.loader import load_quantized_model
from modelslim.app.analyze import AnalyzeArgs, run_analyze, tokenized_samples
from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim.app.sensitivity import SensitivityMeter, group_units, unit_layers
from tests.tune._helpers import LAYERS, make_outlier_model, w8a8_config, write_calib, write_config

pytestmark = pytest.mark.usefixtures("cli_env")


@pytest.fixture(scope="module")
def outlier_model(tmp_path_factory):
    root = tmp_path_factory.mktemp("outlier")
    return make_outlier_model(root / "model"), write_calib(root / "calib.jsonl")


def test_units_group_layers_attention_and_moe_experts():
    names = ["model.layers.0.self_attn.q_proj", "model.layers.0.self_attn.o_proj",
             "model.layers.0.mlp.experts.0.gate_proj", "model.layers.0.mlp.experts.1.gate_proj",
             "model.layers.0.mlp.experts.0.down_proj", "model.layers.1.mlp.down_proj", "lm_head"]
    layer = group_units(names, "layer")
    assert [(u.name, u.pattern, len(u.linears)) for u in layer] == [
        ("model.layers.0", "model.layers.0.*", 5), ("model.layers.1", "model.layers.1.*", 1), ("lm_head", "lm_head", 1)]
    assert [u.pattern for u in group_units(names, "attn")] == ["model.layers.0.self_attn.*"]
    linear = {u.pattern: u.linears for u in group_units(names, "linear")}
    assert linear["model.layers.0.mlp.experts.*"] == names[2:5]  # a layer's experts share one MoE kernel
    assert len(linear) == 5
    experts = next(u for u in group_units(names, "linear") if u.pattern.endswith("experts.*"))
    assert unit_layers(experts) == ["model.layers.0.mlp.experts.0.gate_proj", "model.layers.0.mlp.experts.0.down_proj"]


def quantize(model, calib, tmp_path, name: str, exclude: list[str]):
    config = write_config(tmp_path / f"{name}.yaml", w8a8_config(calib, exclude))
    return run_quant(QuantArgs(str(model), str(tmp_path / name), "Llama-demo", config_path=str(config), device="cpu"))


def analyze(model, calib, tmp_path, scope="layer", metric="mse_model_wise"):
    config = write_config(tmp_path / f"{scope}-{metric}.yaml", w8a8_config(calib))
    return run_analyze(AnalyzeArgs(scope, str(model), "Llama-demo", str(tmp_path / f"out-{scope}-{metric}"),
                                   config_path=str(config), calib_dataset=str(calib), metric=metric, device="cpu", topk=2))


def test_linear_scope_finds_the_outlier_linear(outlier_model, tmp_path):
    model, calib = outlier_model
    report = analyze(model, calib, tmp_path, "linear", "mse_layer_wise")
    assert report["units"][0]["unit"] == "model.layers.2.mlp.down_proj"
    assert report["units"][1]["unit"] == "model.layers.0.mlp.down_proj"
    out = tmp_path / "out-linear-mse_layer_wise"
    assert sorted(p.name for p in out.iterdir()) == ["analysis.json", "analysis.png"]  # the work checkpoints are gone
    assert (out / "analysis.json").stat().st_mode & 0o777 == 0o640
    assert json.loads((out / "analysis.json").read_text())["exclude"][0] == "model.layers.2.mlp.down_proj"


@pytest.mark.slow
def test_layer_ranking_matches_brute_force(outlier_model, tmp_path):
    """Brute force: one full quantization (its own calibration) per layer with that layer left float, each
    checkpoint reloaded by the reference runtime and compared with the float model (KL of the next-token
    distributions on the same samples)."""
    model, calib = outlier_model
    report = analyze(model, calib, tmp_path)
    float_model = AutoModelForCausalLM.from_pretrained(model, dtype=torch.float32).eval()
    meter = SensitivityMeter(float_model, float_model, {}, tokenized_samples(model, str(calib), 4, torch.device("cpu")))
    meter.measure_reference()
    brute = {f"model.layers.{layer}": meter.divergence(load_quantized_model(
        model, quantize(model, calib, tmp_path, f"brute{layer}", [f"model.layers.{layer}.*"]))) for layer in range(LAYERS)}
    brute_order = sorted(brute, key=brute.get)  # left float, the most harmful layer leaves the smallest divergence
    by_gain = [row["unit"] for row in sorted(report["units"], key=lambda row: -row["float_gain"])]
    assert [row["unit"] for row in report["units"]][:2] == brute_order[:2] == ["model.layers.2", "model.layers.0"]
    assert by_gain[:2] == brute_order[:2]
    assert report["exclude"] == ["model.layers.2.*", "model.layers.0.*"]


def test_bad_metric_and_scope_are_usage_errors(outlier_model, tmp_path):
    model, _ = outlier_model
    for extra in (["--metric", "bogus"], ["sideways"]):
        result = subprocess.run([sys.executable, "-m", "modelslim.cli.main", "analyze", *extra, "--model_path", str(model),
                                 "--model_type", "Llama-demo"], capture_output=True, text=True, stdin=subprocess.DEVNULL,
                                cwd=tmp_path, timeout=900)
        assert result.returncode == 2 and "invalid choice" in result.stderr and "Traceback" not in result.stderr
