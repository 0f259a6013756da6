"""Every export type end to end: quantize a tiny Qwen2, check each saved tensor's name, dtype and shape against
the spec tables (format-and-runners.md §1.5), the description globals (§1.4), the bit layouts (§1.6), and
reload the checkpoint through the reference runtime to compare it with the quantizer's own simulation."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from modelslim_core.quant.packing import fp4_codes, unpack_fp4, unpack_int4_rows
from modelslim_core.reference_runtime import load_quantized_model
from tests.quant_runs import corrupt, flow, quantize_capturing


def scheme(dtype: str, scope: str, symmetric: bool, method: str = "minmax", **ext) -> str:
    fields = {"dtype": dtype, "scope": scope, "symmetric": symmetric, "method": method}
    if ext:
        fields["ext"] = flow(ext)
    return flow(fields)


TOKEN8 = scheme("int8", "per_token", True)
INTEGER_TYPES = {  # linear -> (act, weight): one module per type, with each method represented
    "q_proj": (scheme("int8", "pd_mix", False), scheme("int8", "per_channel", True, "gptq", percdamp=0.05)),
    "k_proj": (scheme("int8", "per_tensor", False, "histogram"), scheme("int8", "per_channel", True)),
    "v_proj": (TOKEN8, scheme("int8", "per_group", False, group_size=32)),
    "o_proj": (None, scheme("int8", "per_group", True, "gptq", group_size=32, block_size=16)),
    "gate_proj": (TOKEN8, scheme("int4", "per_channel", True, "gptq")),
    "up_proj": (scheme("int4", "per_token", True), scheme("int4", "per_group", False, "gptq", group_size=32)),
    "down_proj": (TOKEN8, scheme("int4", "per_channel", True, "ssz", step=20)),
}
MX8 = scheme("mxfp8", "per_block", True)
MX4 = scheme("mxfp4", "per_block", True)
FLOAT_TYPES = {
    "q_proj": (scheme("fp8_e4m3", "per_token", True), scheme("fp8_e4m3", "per_channel", True)),
    "k_proj": (MX8, MX8),
    "v_proj": (MX8, MX4),
    "o_proj": (MX4, MX4),
    "mlp": (scheme("int4", "per_token", True), scheme("int4", "per_channel", False)),  # W4A4_DYNAMIC per channel
}

PREFIX = "model.layers.0"


def config_text(types: dict[str, tuple[str | None, str]], dataset: Path) -> str:
    items = []
    for linear, (act, weight) in types.items():
        qconfig = f"{{act: {act}, weight: {weight}}}" if act else f"{{weight: {weight}}}"
        items.append(f'        - {{type: linear_quant, qconfig: {qconfig}, include: ["*{linear}*"]}}')
    return (
        "apiversion: modelslim_v1\nspec:\n  runner: layer_wise\n  process:\n    - type: group\n      configs:\n"
        + "\n".join(items)
        + f"\n  save: [{{type: ascendv1_saver, part_file_size: 0}}]\n  dataset: {dataset}\n"
    )


def run(tiny_models, tmp_path_factory, name: str, types, dtype: torch.dtype) -> dict:
    tmp = tmp_path_factory.mktemp(name)
    dataset = tmp / "calib.jsonl"
    dataset.write_text('{"text": "Export types are checked by reloading what was saved."}\n'
                       '{"text": "def f(x):\\n    return 3 * x + 1"}\n{"text": "低比特量化。"}\n')
    config = tmp / "types.yaml"
    config.write_text(config_text(types, dataset))
    model_dir, out = tiny_models("qwen2", dtype), tmp / "out"
    captured = quantize_capturing(model_dir, config, out)
    return {
        "dtype": dtype,
        "model_dir": model_dir,
        "out": out,
        "captured": captured,
        "tensors": load_file(out / "quant_model_weights.safetensors"),
        "description": json.loads((out / "quant_model_description.json").read_text()),
    }


@pytest.fixture(scope="module")
def integer_types(tiny_models, tmp_path_factory):
    return run(tiny_models, tmp_path_factory, "int-types", INTEGER_TYPES, torch.bfloat16)


@pytest.fixture(scope="module")
def float_types(tiny_models, tmp_path_factory):
    return run(tiny_models, tmp_path_factory, "float-types", FLOAT_TYPES, torch.float16)


def layout(saved, linear: str) -> dict[str, tuple[torch.dtype, tuple[int, ...]]]:
    prefix = f"{PREFIX}.{linear}."
    return {k[len(prefix):]: (v.dtype, tuple(v.shape)) for k, v in saved["tensors"].items() if k.startswith(prefix)}


def tags(saved, linear: str) -> dict[str, str]:
    prefix = f"{PREFIX}.{linear}."
    return {k[len(prefix):]: v for k, v in saved["description"].items() if k.startswith(prefix)}


F32, I8, U8, FP8 = torch.float32, torch.int8, torch.uint8, torch.float8_e4m3fn


def test_integer_types_layout(integer_types):
    s = integer_types
    bf16 = torch.bfloat16
    assert layout(s, "self_attn.q_proj") == {  # W8A8_MIX: the W8A8 set (bf16 model: fp32 deq_scale) + weight_scale/offset
        "weight": (I8, (64, 64)), "quant_bias": (torch.int32, (64,)), "input_scale": (F32, (1,)), "input_offset": (F32, (1,)),
        "deq_scale": (F32, (64,)), "bias": (F32, (64,)), "weight_scale": (F32, (64, 1)), "weight_offset": (F32, (64, 1)),
    }
    assert layout(s, "self_attn.k_proj")["input_scale"] == (F32, (1,))  # W8A8 (histogram)
    assert layout(s, "self_attn.v_proj") == {  # W8A8_DYNAMIC per group 32
        "weight": (I8, (32, 64)), "weight_scale": (F32, (32, 2)), "weight_offset": (F32, (32, 2)), "bias": (bf16, (32,)),
    }
    assert layout(s, "self_attn.o_proj") == {"weight": (I8, (64, 64)), "weight_scale": (F32, (64, 2)), "weight_offset": (F32, (64, 2))}
    assert layout(s, "mlp.gate_proj") == {  # W4A8_DYNAMIC, column parallel: scale_bias [out, 1]
        "weight": (I8, (64, 64)), "weight_scale": (F32, (128, 1)), "weight_offset": (F32, (128, 1)), "scale_bias": (F32, (128, 1)),
    }
    assert layout(s, "mlp.up_proj") == {"weight": (I8, (128, 64)), "weight_scale": (F32, (128, 2)), "weight_offset": (F32, (128, 2))}
    assert layout(s, "mlp.down_proj") == {  # W4A8_DYNAMIC, row parallel: scale_bias [out, 16]
        "weight": (I8, (32, 128)), "weight_scale": (F32, (64, 1)), "weight_offset": (F32, (64, 1)), "scale_bias": (F32, (64, 16)),
    }


def test_integer_types_tags_and_globals(integer_types):
    d = integer_types["description"]
    expected = {"q_proj": "W8A8_MIX", "k_proj": "W8A8", "v_proj": "W8A8_DYNAMIC", "o_proj": "W8A16",
                "gate_proj": "W4A8_DYNAMIC", "up_proj": "W4A4_DYNAMIC", "down_proj": "W4A8_DYNAMIC"}
    for linear, tag in expected.items():
        part = "self_attn" if linear in ("q_proj", "k_proj", "v_proj", "o_proj") else "mlp"
        found = tags(integer_types, f"{part}.{linear}")
        assert {v for k, v in found.items() if k != "bias"} == {tag}, linear
        assert found.get("bias", "FLOAT") == "FLOAT"
    assert d["model_quant_type"] == "W4A4_DYNAMIC"  # highest ranked; W4A8_DYNAMIC is not in the ranking
    assert d["group_size"] == 32


def test_integer_types_values(integer_types):
    t, captured = integer_types["tensors"], integer_types["captured"]
    gate = captured[f"{PREFIX}.mlp.gate_proj"].qweight
    assert torch.equal(unpack_int4_rows(t[f"{PREFIX}.mlp.gate_proj.weight"]), gate.codes)
    down = captured[f"{PREFIX}.mlp.down_proj"].qweight
    shards = (down.codes.double() * down.scale.double()).reshape(64, 16, 8).sum(-1) * 8
    assert torch.allclose(t[f"{PREFIX}.mlp.down_proj.scale_bias"].double(), shards, rtol=1e-6)
    assert t[f"{PREFIX}.mlp.gate_proj.weight_offset"].abs().sum() == 0
    assert t[f"{PREFIX}.self_attn.q_proj.weight_offset"].abs().sum() == 0
    assert t[f"{PREFIX}.self_attn.v_proj.weight_offset"].abs().sum() > 0  # asymmetric per group: real offsets
    up = t[f"{PREFIX}.mlp.up_proj.weight"]
    assert -8 <= up.min() and up.max() <= 7  # W4A4 saves int4 values unpacked


def test_float_types_layout_tags_and_globals(float_types):
    s = float_types
    assert layout(s, "self_attn.q_proj") == {  # W8A8FP8_DYNAMIC
        "weight": (FP8, (64, 64)), "weight_scale": (F32, (64, 1)), "weight_offset": (F32, (64, 1)), "bias": (torch.float16, (64,)),
    }
    assert layout(s, "self_attn.k_proj") == {"weight": (FP8, (32, 64)), "weight_scale": (U8, (32, 2)), "bias": (torch.float16, (32,))}
    assert layout(s, "self_attn.v_proj") == {"weight": (U8, (32, 32)), "weight_scale": (U8, (32, 2)), "bias": (torch.float16, (32,))}
    assert layout(s, "self_attn.o_proj") == {"weight": (U8, (64, 32)), "weight_scale": (U8, (64, 2))}
    assert layout(s, "mlp.down_proj") == {"weight": (I8, (64, 128)), "weight_scale": (F32, (64, 1)), "weight_offset": (F32, (64, 1))}
    expected = {"self_attn.q_proj": "W8A8FP8_DYNAMIC", "self_attn.k_proj": "W8A8_MXFP8", "self_attn.v_proj": "W4A8_MXFP",
                "self_attn.o_proj": "W4A4_MXFP4", "mlp.down_proj": "W4A4_DYNAMIC"}
    for linear, tag in expected.items():
        assert {v for k, v in tags(s, linear).items() if k != "bias"} == {tag}, linear
    assert s["description"]["model_quant_type"] == "W4A4_MXFP4"
    assert s["description"]["group_size"] == 32  # MX forces 32
    v_proj = s["captured"][f"{PREFIX}.self_attn.v_proj"].qweight
    assert torch.equal(unpack_fp4(s["tensors"][f"{PREFIX}.self_attn.v_proj.weight"]), fp4_codes(v_proj.elements.float()))
    assert torch.equal(s["tensors"][f"{PREFIX}.self_attn.k_proj.weight_scale"], s["captured"][f"{PREFIX}.self_attn.k_proj"].qweight.exponents)


@pytest.mark.parametrize("which", ["integer_types", "float_types"])
def test_reloaded_checkpoint_computes_what_the_quantizer_simulated(which, request):
    saved = request.getfixturevalue(which)
    model = load_quantized_model(saved["model_dir"], saved["out"])  # strict: any layout mistake fails here
    modules = dict(model.named_modules())
    assert len(saved["captured"]) == 2 * 7
    generator = torch.Generator().manual_seed(1)
    for name, layer in saved["captured"].items():
        for tokens in (5, 1):  # a prefill and a decode step (W8A8_MIX takes different paths)
            x = torch.randn(2, tokens, layer.in_features, generator=generator)
            simulated, runtime = layer(x), modules[name](x)
            assert (runtime - simulated).abs().max() <= 2e-3 * simulated.abs().max(), (name, tokens)


@pytest.mark.parametrize("which, bound", [("integer_types", 0.1), ("float_types", 0.25)])  # measured 0.05 / 0.13
def test_reloaded_checkpoint_stays_close_to_the_float_model(which, bound, request):
    from transformers import AutoModelForCausalLM

    saved = request.getfixturevalue(which)
    ids = torch.arange(1, 40).reshape(1, -1)
    reference = AutoModelForCausalLM.from_pretrained(saved["model_dir"], dtype=torch.float32)(input_ids=ids).logits
    logits = load_quantized_model(saved["model_dir"], saved["out"])(input_ids=ids).logits
    assert ((logits - reference).norm() / reference.norm()).item() < bound


def test_a_layer_whose_shape_does_not_fit_is_refused_naming_the_yaml_path_and_layer(tiny_models, tmp_path):
    from modelslim_core.errors import ConfigError

    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"text": "never read"}\n')
    config = tmp_path / "bad.yaml"
    config.write_text(config_text({"mlp": (TOKEN8, scheme("int8", "per_group", True, "gptq", group_size=48))}, dataset))
    with pytest.raises(ConfigError) as info:
        quantize_capturing(tiny_models("qwen2"), config, tmp_path / "out")
    message = str(info.value)
    assert "spec.process[0].configs[0].qconfig: model.layers.0.mlp.gate_proj ([128, 64]) cannot be quantized as W8A8_DYNAMIC" in message
    assert "ext.group_size 48 does not divide its input dimension 64" in message
    assert not (tmp_path / "out" / "quant_model_description.json").exists()


def test_two_group_sizes_in_one_checkpoint_are_refused(tiny_models, tmp_path):
    from modelslim_core.errors import SaveError

    dataset = tmp_path / "calib.jsonl"
    dataset.write_text('{"text": "never read"}\n')
    config = tmp_path / "two.yaml"
    config.write_text(config_text({"self_attn": (None, scheme("int8", "per_group", True, group_size=32)),
                                   "mlp": (None, scheme("int8", "per_group", True, group_size=64))}, dataset))
    with pytest.raises(SaveError, match="model.layers.0.mlp.gate_proj .W8A16. has group size 64, but an earlier layer"):
        quantize_capturing(tiny_models("qwen2"), config, tmp_path / "out")


def _set(tensors: dict, name: str, value) -> None:
    tensors[f"{PREFIX}.{name}"] = value


@pytest.mark.parametrize(
    "which, edit, message",
    [
        ("integer_types", lambda t, d: _set(t, "mlp.gate_proj.scale_bias", t[f"{PREFIX}.mlp.gate_proj.scale_bias"] + 1),
         "mlp.gate_proj.scale_bias does not equal 8"),
        ("integer_types", lambda t, d: _set(t, "mlp.up_proj.weight", torch.full_like(t[f"{PREFIX}.mlp.up_proj.weight"], 9)),
         "mlp.up_proj.weight holds values outside the int4 range"),
        ("integer_types", lambda t, d: _set(t, "self_attn.v_proj.weight_scale", torch.ones(32, 4)),
         "self_attn.v_proj.weight_scale is float32 [32, 4], expected float32 [32, 1] or [32, 2]"),
        ("integer_types", lambda t, d: d.__setitem__("group_size", 0), "self_attn.v_proj.weight_scale is float32 [32, 2], expected float32 [32, 1]"),
        ("integer_types", lambda t, d: _set(t, "mlp.down_proj.scale_bias", t[f"{PREFIX}.mlp.down_proj.scale_bias"][:, :1].contiguous()),
         "mlp.down_proj.scale_bias is float32 [64, 1], expected float32 [64, 16]"),
        ("float_types", lambda t, d: _set(t, "self_attn.o_proj.weight_scale", torch.full_like(t[f"{PREFIX}.self_attn.o_proj.weight_scale"], 255)),
         "self_attn.o_proj.weight_scale holds the E8M0 NaN code 255"),
        ("float_types", lambda t, d: _set(t, "self_attn.v_proj.weight", t[f"{PREFIX}.self_attn.v_proj.weight"].view(torch.int8)),
         "self_attn.v_proj.weight is int8 [32, 32], expected uint8 [32, 32]"),
    ],
)
def test_a_corrupted_new_type_is_named_on_reload(which, edit, message, request, tmp_path):
    from modelslim_core.errors import CheckpointError

    saved = request.getfixturevalue(which)
    with pytest.raises(CheckpointError) as info:
        load_quantized_model(saved["model_dir"], corrupt(saved["out"], tmp_path, edit))
    assert message in str(info.value)
