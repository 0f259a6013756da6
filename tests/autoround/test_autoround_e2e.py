"""autoround_quant through the real pipeline on a tiny Qwen2: its first decoder layer's output error on the
calibration text is lower than minmax's at int4, runs are deterministic, checkpoints reload strictly through
the reference runtime, and bad strategies fail when the YAML is loaded."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from modelslim_core.processors.autoround_quant import AutoRoundProcessor
from modelslim_core.reference_runtime import load_quantized_model
from tests.quant_runs import assert_config_error, parse_process_item as parse, quantize_capturing

TOKEN8 = "{scope: per_token, dtype: int8, symmetric: true, method: minmax}"
TOKEN4 = "{scope: per_token, dtype: int4, symmetric: true, method: minmax}"
INT4_PC = "{scope: per_channel, dtype: int4, symmetric: true, method: %s}"
INT4_PG = "{scope: per_group, dtype: int4, symmetric: false, method: %s, ext: {group_size: 32}}"
# MLP W4A4_DYNAMIC per group (asymmetric), everything else W4A8_DYNAMIC: both tuned grids and both exporters.
AUTOROUND = (f"{{type: autoround_quant, iters: 30, strategies: ["
             f"{{qconfig: {{act: {TOKEN4}, weight: {INT4_PG % 'autoround'}}}, include: ['*mlp*']}}, "
             f"{{qconfig: {{act: {TOKEN8}, weight: {INT4_PC % 'autoround'}}}}}]}}")
MINMAX = ("{type: group, configs: ["
          f"{{type: linear_quant, qconfig: {{act: {TOKEN4}, weight: {INT4_PG % 'minmax'}}}, include: ['*mlp*']}}, "
          f"{{type: linear_quant, qconfig: {{act: {TOKEN8}, weight: {INT4_PC % 'minmax'}}}}}]}}")
TEXTS = ["AutoRound learns which way each weight rounds.", "def area(r):\n    return 3.14159 * r * r",
         "量化误差在块的输出上测量。", "Q: What is 12 * 7? A: 84.", "The lazy dog sleeps in the sun all day."]


def config_text(process: str, dataset: Path) -> str:
    return (f"apiversion: modelslim_v1\nspec:\n  runner: layer_wise\n  process:\n    - {process}\n"
            f"  save: [{{type: ascendv1_saver, part_file_size: 0}}]\n  dataset: {dataset}\n")


@pytest.fixture(scope="module")
def runs(tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("autoround")
    dataset = tmp / "calib.jsonl"
    dataset.write_text("".join(json.dumps({"text": t}, ensure_ascii=False) + "\n" for t in TEXTS))
    model_dir = tiny_models("qwen2", torch.float32)
    outputs = {}
    for name, process in (("autoround", AUTOROUND), ("again", AUTOROUND), ("minmax", MINMAX)):
        config = tmp / f"{name}.yaml"
        config.write_text(config_text(process, dataset))
        outputs[name] = (tmp / name, quantize_capturing(model_dir, config, tmp / name))
    return model_dir, outputs


def first_layer_error(model_dir: Path, out: Path) -> float:
    """Relative error of decoder layer 0's output on the calibration texts (the layer AutoRound tuned there)."""
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
    quantized = load_quantized_model(model_dir, out)
    error, norm = 0.0, 0.0
    with torch.no_grad():
        for text in TEXTS:
            ids = tokenizer(text, return_tensors="pt")["input_ids"]
            a = reference(ids, output_hidden_states=True).hidden_states[1]
            b = quantized(ids, output_hidden_states=True).hidden_states[1]
            error += float((a - b).pow(2).sum())
            norm += float(a.pow(2).sum())
    return (error / norm) ** 0.5


def test_autoround_beats_minmax_on_the_tuned_layer_output(runs):
    model_dir, outputs = runs
    autoround = first_layer_error(model_dir, outputs["autoround"][0])
    minmax = first_layer_error(model_dir, outputs["minmax"][0])
    assert autoround < 0.8 * minmax, (autoround, minmax)


def test_exports_the_strategy_types_and_reloads_exactly(runs):
    model_dir, outputs = runs
    out, captured = outputs["autoround"]
    description = json.loads((out / "quant_model_description.json").read_text())
    tensors = load_file(out / "quant_model_weights.safetensors")
    assert description["group_size"] == 32
    for name, layer in captured.items():
        kind = "W4A4_DYNAMIC" if ".mlp." in name else "W4A8_DYNAMIC"
        assert layer.export_type == kind and description[f"{name}.weight"] == kind
        weight = tensors[f"{name}.weight"]
        if kind == "W4A4_DYNAMIC":  # unpacked int4 codes, per-group asymmetric scale and offset
            assert weight.dtype == torch.int8 and tuple(weight.shape) == (layer.out_features, layer.in_features)
            assert tuple(tensors[f"{name}.weight_scale"].shape) == (layer.out_features, layer.in_features // 32)
            assert weight.min() >= -8 and weight.max() <= 7
        else:  # two output rows per byte
            assert weight.dtype == torch.int8 and tuple(weight.shape) == (layer.out_features // 2, layer.in_features)
            assert tuple(tensors[f"{name}.weight_scale"].shape) == (layer.out_features, 1)
    layers = json.loads((out / "quant_report.json").read_text())["layers"]  # per-layer weight error is reported
    assert set(layers) == set(captured)
    assert all(layers[name]["type"] == layer.export_type and 0 < layers[name]["weight_rel_error"] < 0.5
               for name, layer in captured.items())
    reloaded = load_quantized_model(model_dir, out)
    torch.manual_seed(0)
    for name, layer in captured.items():
        x = torch.randn(4, layer.in_features)
        assert torch.allclose(reloaded.get_submodule(name)(x), layer(x), rtol=1e-4, atol=1e-5), name


def test_runs_are_deterministic(runs):
    _, outputs = runs
    first = load_file(outputs["autoround"][0] / "quant_model_weights.safetensors")
    second = load_file(outputs["again"][0] / "quant_model_weights.safetensors")
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def strategy(act: str, weight: str) -> str:
    return f"{{type: autoround_quant, strategies: [{{qconfig: {{act: {act}, weight: {weight}}}}}]}}"


STATIC = "{scope: per_tensor, dtype: int8, symmetric: false, method: minmax}"


@pytest.mark.parametrize("process,needles", [
    (strategy(STATIC, "{scope: per_channel, dtype: int8, symmetric: true, method: autoround}"), ["strategies[0].qconfig", "dynamic per_token"]),
    (strategy(TOKEN8, "{scope: per_group, dtype: int4, symmetric: true, method: autoround}"), ["strategies[0].qconfig", "group_size"]),
    (strategy(TOKEN8, "{scope: per_channel, dtype: int4, symmetric: true, method: autoround, ext: {group_size: 32}}"), ["group_size is only allowed"]),
    (strategy(TOKEN8, "{scope: per_channel, dtype: int4, symmetric: true, method: autoround, ext: {scale_dtype: fp8}}"), ["scale_dtype"]),
    (strategy(TOKEN8, "{scope: per_channel, dtype: int4, symmetric: true, method: gptq}"), ["weight.method"]),
    (strategy(TOKEN8, "{scope: per_channel, dtype: int4, symmetric: false, method: autoround}"), ["cannot be exported"]),
    (strategy(TOKEN8, "{scope: per_block, dtype: mxfp4, symmetric: true, method: autoround}"), ["int8 or int4"]),
    ("{type: autoround_quant, strategies: []}", ["spec.process[0].strategies"]),
    ("{type: autoround_quant, iters: 0, strategies: [{qconfig: {weight: {scope: per_channel, dtype: int8, symmetric: true, method: autoround}}}]}",
     ["spec.process[0].iters"]),
    ("{type: group, configs: [" + strategy(TOKEN8, "{scope: per_channel, dtype: int4, symmetric: true, method: autoround}") + "]}",
     ["spec.process[0].configs[0].type", "cannot run inside a group"]),
])
def test_bad_strategies_are_named_when_the_yaml_is_loaded(process, needles):
    assert_config_error(process, *needles)


def test_defaults_export_types_and_capabilities():
    config = parse(strategy(TOKEN8, "{scope: per_channel, dtype: int4, symmetric: true, method: autoround}"))
    assert (config.iters, config.enable_minmax_tuning, config.enable_round_tuning) == (10, True, True)
    assert config.export_types() == {"W4A8_DYNAMIC"}
    assert AutoRoundProcessor.needs_data(config) and not AutoRoundProcessor.supports_distributed(config)
    weight_only = parse("{type: autoround_quant, strategies: [{qconfig: {weight: {scope: per_group, dtype: int8, symmetric: false, "
                        "method: autoround, ext: {group_size: 32, scale_dtype: bfloat16}}}}]}")
    assert weight_only.export_types() == {"W8A16"}
    assert weight_only.strategies[0].qconfig.grid().scale_dtype == torch.bfloat16
