"""ascendv1 output: every tensor's name, dtype and shape per type, and the kernels' arithmetic rebuilt from
the SAVED tensors matching the float layer (docs/formats.md)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
import torch.nn.functional as F
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM, AutoTokenizer

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_save_ascend.output_dir import strip_quantization_config
from tests.quant_runs import WEIGHT_ASYM, mixed_config


PREFIX = "model.layers.0"


def quantize_copy(model_dir: Path, tmp_path: Path, calib: Path) -> Path:
    """Quantize a tiny model with the mixed config."""
    config_path = tmp_path / "mixed.yaml"
    config_path.write_text(mixed_config(calib, down_weight=WEIGHT_ASYM))
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config_path), device="cpu"))
    return out


@pytest.fixture(scope="module", params=[torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def saved(request, tiny_models, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("layout")
    calib = tmp / "calib.jsonl"
    calib.write_text('{"inputs_pretokenized": "Quantization keeps the accuracy of the model."}\n'
                     '{"inputs_pretokenized": "量化后的模型更小。"}\n')
    model_dir = tiny_models("qwen2", request.param)
    out = quantize_copy(model_dir, tmp, calib)
    return {
        "dtype": request.param,
        "model_dir": model_dir,
        "out": out,
        "tensors": load_file(out / "quant_model_weights.safetensors"),
        "description": json.loads((out / "quant_model_description.json").read_text()),
    }


def shapes(saved, linear):
    return {k.split(".")[-1]: (v.dtype, tuple(v.shape)) for k, v in saved["tensors"].items() if k.startswith(f"{PREFIX}.{linear}.")}


def test_output_files(saved):
    names = sorted(p.name for p in saved["out"].iterdir())
    assert "quant_model_weights.safetensors" in names
    assert "quant_model_weights.safetensors.index.json" not in names  # part_file_size 0: no index
    assert {"config.json", "tokenizer.json", "tokenizer_config.json", "Qwen2-demo_best_practice.yaml"} <= set(names)
    assert not any(name.endswith(".partial") for name in names)


def test_quantization_config_is_stripped(tmp_path):
    config_file = tmp_path / "config.json"
    config_file.write_text(json.dumps({"model_type": "x", "quantization_config": {"quant_method": "fp8"},
                                       "text_config": {"quantization_config": {}, "hidden_size": 8}}))
    strip_quantization_config(config_file)
    assert json.loads(config_file.read_text()) == {"model_type": "x", "text_config": {"hidden_size": 8}}


def test_w8a8_static_tensors(saved):
    deq_dtype = torch.float32 if saved["dtype"] == torch.bfloat16 else torch.int64
    assert shapes(saved, "self_attn.q_proj") == {
        "weight": (torch.int8, (64, 64)),
        "quant_bias": (torch.int32, (64,)),
        "input_scale": (torch.float32, (1,)),
        "input_offset": (torch.float32, (1,)),
        "deq_scale": (deq_dtype, (64,)),
        "bias": (torch.float32, (64,)),
    }
    # o_proj has no float bias: a zero bias is still written, and quant_bias carries the zero point
    assert shapes(saved, "self_attn.o_proj")["bias"] == (torch.float32, (64,))
    assert saved["tensors"][f"{PREFIX}.self_attn.o_proj.bias"].abs().sum() == 0


def test_w8a8_dynamic_and_w8a16_tensors(saved):
    assert shapes(saved, "mlp.gate_proj") == {
        "weight": (torch.int8, (128, 64)),
        "weight_scale": (torch.float32, (128, 1)),
        "weight_offset": (torch.float32, (128, 1)),
    }
    assert saved["tensors"][f"{PREFIX}.mlp.gate_proj.weight_offset"].abs().sum() == 0
    assert shapes(saved, "mlp.down_proj") == {
        "weight": (torch.int8, (64, 128)),
        "weight_scale": (torch.float32, (64, 1)),
        "weight_offset": (torch.float32, (64, 1)),
    }
    assert saved["tensors"][f"{PREFIX}.mlp.down_proj.weight_offset"].abs().sum() > 0  # asymmetric


def test_float_tensors_keep_the_model_dtype(saved):
    tensors = saved["tensors"]
    for name in ("model.embed_tokens.weight", "model.norm.weight", "lm_head.weight", f"{PREFIX}.input_layernorm.weight"):
        assert tensors[name].dtype == saved["dtype"], name


def test_description_tags_and_globals(saved):
    desc = saved["description"]
    assert desc[f"{PREFIX}.self_attn.q_proj.weight"] == "W8A8"
    assert desc[f"{PREFIX}.self_attn.q_proj.bias"] == "FLOAT"
    assert desc[f"{PREFIX}.mlp.gate_proj.weight"] == "W8A8_DYNAMIC"
    assert desc[f"{PREFIX}.mlp.down_proj.weight_scale"] == "W8A16"
    assert desc["model.embed_tokens.weight"] == "FLOAT"
    assert set(desc) - {"version", "model_quant_type", "metadata", "group_size", "optional"} == set(saved["tensors"])
    assert list(desc)[-5:] == ["version", "model_quant_type", "metadata", "group_size", "optional"]
    assert (desc["version"], desc["model_quant_type"], desc["group_size"]) == ("1.0.0", "W8A8", 0)
    # the dtype the deq_scale layout was written for (bf16: float32 deq_scale, fp16: int64)
    assert desc["metadata"] == {"serving_dtype": str(saved["dtype"]).removeprefix("torch.")} and desc["optional"] == {}


# --- arithmetic from the saved tensors ----------------------------------------------------------------------


def float_inputs(model_dir: Path) -> tuple[torch.nn.Module, dict[str, torch.Tensor]]:
    """The float model and the real inputs of layer 0's linears on a calibration-like text."""
    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    inputs: dict[str, torch.Tensor] = {}
    layer = model.model.layers[0]
    hooks = [
        getattr(layer, part).get_submodule(name).register_forward_pre_hook(
            lambda m, args, key=name: inputs.setdefault(key, args[0][0])
        )
        for part, name in (("self_attn", "q_proj"), ("mlp", "gate_proj"), ("mlp", "down_proj"))
    ]
    with torch.no_grad():
        model(**tokenizer("Calibration text for checking the saved integer arithmetic.", return_tensors="pt"))
    for hook in hooks:
        hook.remove()
    return model, inputs


def relative_error(actual: torch.Tensor, expected: torch.Tensor) -> float:
    return ((actual - expected).norm() / expected.norm()).item()


def test_saved_tensors_reproduce_the_float_layers(saved):
    model, inputs = float_inputs(saved["model_dir"])
    layer = model.model.layers[0]
    t = {k[len(PREFIX) + 1:]: v for k, v in saved["tensors"].items() if k.startswith(PREFIX + ".")}

    # W8A8 static: y = deq_scale * (x_q @ W_q^T + quant_bias), x_q = clamp(round(x / input_scale) + input_offset)
    x = inputs["q_proj"]
    deq = t["self_attn.q_proj.deq_scale"]
    deq = deq.to(torch.int32).view(torch.float32) if deq.dtype == torch.int64 else deq
    x_q = torch.clamp(torch.round(x / t["self_attn.q_proj.input_scale"]) + t["self_attn.q_proj.input_offset"], -128, 127)
    acc = x_q.double() @ t["self_attn.q_proj.weight"].double().T + t["self_attn.q_proj.quant_bias"].double()
    y = (acc * deq.double()).float()
    assert relative_error(y, layer.self_attn.q_proj(x)) < 0.03

    # W8A8_DYNAMIC: per-token symmetric int8 activations, y = (x_q @ W_q^T) * x_scale * weight_scale
    x = inputs["gate_proj"]
    x_scale = x.abs().amax(dim=-1, keepdim=True) / 127
    x_q = torch.round(x / x_scale)
    y = (x_q @ t["mlp.gate_proj.weight"].float().T) * x_scale * t["mlp.gate_proj.weight_scale"].T
    assert relative_error(y, layer.mlp.gate_proj(x)) < 0.03

    # W8A16: y = x @ ((W_q - offset) * scale)^T
    x = inputs["down_proj"]
    w = (t["mlp.down_proj.weight"].float() - t["mlp.down_proj.weight_offset"]) * t["mlp.down_proj.weight_scale"]
    assert relative_error(x @ w.T, layer.mlp.down_proj(x)) < 0.01
