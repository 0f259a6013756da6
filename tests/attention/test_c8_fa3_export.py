"""C8 and FA3 checkpoints: every attention tensor by name/dtype/shape/tag, the description keys, strict reload
through the reference runtime (which then quantizes K/V and Q/K/V), and the config errors."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.errors import CheckpointError, ConfigError
from modelslim_core.protocol.config import parse_quant_config
from modelslim_core.protocol.yaml_io import load_yaml_text as load_yaml
from tests.quant_runs import LAYOUT_TAGS
from modelslim_core.reference_runtime import load_quantized_model
from tests.quant_runs import DYNAMIC_ACT, WEIGHT_SYM, corrupt

CALIB = [
    "The quick brown fox jumps over the lazy dog while the cat sleeps on the warm mat near the fire.",
    "def add(a, b):\n    return a + b\n\nclass Stack:\n    def push(self, x):\n        self.items.append(x)\n",
    "Q: What is 12 * 7? A: 84. Q: What is 9 * 9? A: 81. Q: What is 15 + 27? A: 42.",
]
C8_ASYM = "{type: dynamic_cache, qconfig: {scope: per_channel, dtype: int8, symmetric: false, method: minmax}}"
MIXED_FA = "{type: fa3_quant, details: {fa_q: {scope: per_token, dtype: fp8_e4m3, symmetric: true, method: minmax}, " \
           "fa_k: {scope: per_head, dtype: int8, symmetric: true, method: minmax}, " \
           "fa_v: {scope: per_head, dtype: fp8_e4m3, symmetric: true, method: minmax}}}"
HEADS, KV_HEADS, HEAD_DIM = 4, 2, 16


def config_text(dataset: Path, *attention: str) -> str:
    children = "\n".join(f"        - {item}" for item in (f"{{type: linear_quant, qconfig: {{act: {DYNAMIC_ACT}, weight: {WEIGHT_SYM}}}}}", *attention))
    return f"""apiversion: modelslim_v1
spec:
  runner: layer_wise
  process:
    - type: group
      configs:
{children}
  save: [{{type: ascendv1_saver, part_file_size: 0}}]
  dataset: {dataset}
"""


@pytest.fixture(scope="module")
def calib_file(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in CALIB) + "\n")
    return path


def quantize(model_dir: Path, tmp: Path, dataset: Path, *attention: str) -> Path:
    config = tmp / "config.yaml"
    config.write_text(config_text(dataset, *attention))
    out = tmp / "out"
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config), device="cpu",
                        tags=LAYOUT_TAGS))  # FA3 on non-MLA attention: MindIE LLM, not vLLM-Ascend
    return out


def saved(out: Path) -> tuple[dict, dict[str, tuple[torch.dtype, tuple[int, ...]]]]:
    description = json.loads((out / "quant_model_description.json").read_text())
    with safe_open(out / "quant_model_weights.safetensors", "pt") as handle:
        meta = {k: (handle.get_tensor(k).dtype, tuple(handle.get_tensor(k).shape)) for k in handle.keys()}
    return description, meta


@pytest.fixture(scope="module", params=["qwen2", "qwen3"])
def c8_fa3_run(request, tiny_models, tmp_path_factory, calib_file):
    model_dir = tiny_models(request.param, torch.bfloat16)
    out = quantize(model_dir, tmp_path_factory.mktemp(f"c8fa3-{request.param}"), calib_file, C8_ASYM, "{type: fa3_quant}")
    return model_dir, out


def attention_names(meta) -> set[str]:
    return {k for k in meta if "kv_cache" in k or ".fa_" in k}


def test_every_c8_and_fa3_tensor_by_name_dtype_shape_and_tag(c8_fa3_run):
    _, out = c8_fa3_run
    description, meta = saved(out)
    expected = {}
    for layer in range(2):
        attn = f"model.layers.{layer}.self_attn"
        for proj in ("k_proj", "v_proj"):
            for kind in ("scale", "offset"):
                expected[f"{attn}.{proj}.kv_cache_{kind}"] = (torch.bfloat16, (KV_HEADS * HEAD_DIM,), "C8")
        for branch, heads in (("q", HEADS), ("k", KV_HEADS), ("v", KV_HEADS)):
            expected[f"{attn}.fa_{branch}.scale"] = (torch.float32, (heads, 1), "FAQuant")
            expected[f"{attn}.fa_{branch}.offset"] = (torch.int8, (heads, 1), "FAQuant")
        assert description[f"{attn}.quant_type"] == "INT8"
    assert {name: (*meta[name], description[name]) for name in attention_names(meta)} == expected
    keys = list(description)
    assert [k for k in keys if k in ("kv_cache_type", "kv_quant_type", "fa_quant_type")] == ["kv_cache_type", "kv_quant_type", "fa_quant_type"]
    assert (description["kv_cache_type"], description["kv_quant_type"], description["fa_quant_type"]) == ("C8", "C8", "FAKQuant")
    assert keys[-5:] == ["version", "model_quant_type", "metadata", "group_size", "optional"]
    assert keys.index("fa_quant_type") == len(keys) - 6  # the globals come after every tensor tag


def test_saved_c8_parameters_follow_the_int8_convention(c8_fa3_run):
    _, out = c8_fa3_run
    with safe_open(out / "quant_model_weights.safetensors", "pt") as handle:
        scale = handle.get_tensor("model.layers.1.self_attn.k_proj.kv_cache_scale").float()
        offset = handle.get_tensor("model.layers.1.self_attn.k_proj.kv_cache_offset").float()
        fa_offset = handle.get_tensor("model.layers.1.self_attn.fa_k.offset")
    assert (scale > 0).all() and torch.equal(offset, offset.round()) and offset.abs().max() <= 128
    assert not torch.equal(offset, torch.zeros_like(offset))  # asymmetric: real zero points
    assert torch.equal(fa_offset, torch.zeros_like(fa_offset))


def test_reloaded_c8_fa3_checkpoint_quantizes_attention_and_tracks_the_float_logits(c8_fa3_run, tiny_models):
    from transformers import AutoModelForCausalLM

    model_dir, out = c8_fa3_run
    from transformers import AutoTokenizer

    # a calibration text: the tiny models are random, so per-channel ranges only cover tokens they have seen
    ids = AutoTokenizer.from_pretrained(model_dir)(CALIB[0], return_tensors="pt").input_ids
    float_logits = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(input_ids=ids).logits
    model = load_quantized_model(model_dir, out)
    assert model.config._attn_implementation.startswith("modelslim_tap:")
    quantized = model(input_ids=ids).logits
    error = ((quantized - float_logits).norm() / float_logits.norm()).item()
    assert error < 0.02
    from modelslim_core.attention.taps import remove_tap

    for layer in model.model.layers:
        for key in ("reference_runtime:c8", "reference_runtime:fa"):
            remove_tap(layer.self_attn, key)
    without_attention_quant = model(input_ids=ids).logits
    assert not torch.equal(quantized, without_attention_quant)  # the saved C8/FA3 parameters are in use
    linears_only = ((without_attention_quant - float_logits).norm() / float_logits.norm()).item()
    assert error - linears_only < 0.005  # int8 K/V cache and int8 Q/K/V add little to the linears' error


@pytest.mark.parametrize(
    "edit, message",
    [
        (lambda t, d: t.__setitem__("model.layers.0.self_attn.k_proj.kv_cache_scale", t["model.layers.0.self_attn.k_proj.kv_cache_scale"].float()),
         "model.layers.0.self_attn.k_proj.kv_cache_scale is float32 [32], expected bfloat16 [32]"),
        (lambda t, d: (t.pop("model.layers.1.self_attn.v_proj.kv_cache_offset"), d.pop("model.layers.1.self_attn.v_proj.kv_cache_offset")),
         "model.layers.1.self_attn.v_proj.kv_cache_offset is missing"),
        (lambda t, d: t.__setitem__("model.layers.0.self_attn.fa_q.scale", t["model.layers.0.self_attn.fa_q.scale"][:2]),
         "model.layers.0.self_attn.fa_q.scale is float32 [2, 1], expected float32 [4, 1]"),
        (lambda t, d: d.__setitem__("model.layers.0.self_attn.quant_type", "INT4"), "model.layers.0.self_attn.quant_type is 'INT4'"),
        (lambda t, d: d.__setitem__("model.layers.0.self_attn.fa_k.scale", "C8"), "fa_k.scale is tagged C8, expected FAQuant"),
    ],
)
def test_a_corrupted_attention_tensor_is_named(c8_fa3_run, tmp_path, edit, message):
    model_dir, out = c8_fa3_run
    with pytest.raises(CheckpointError) as info:
        load_quantized_model(model_dir, corrupt(out, tmp_path, edit))
    assert message in str(info.value)


def test_mixed_fa3_branches(tiny_models, tmp_path, calib_file):
    model_dir = tiny_models("llama", torch.bfloat16)
    out = quantize(model_dir, tmp_path, calib_file, MIXED_FA)
    description, meta = saved(out)
    assert description["model.layers.0.self_attn.quant_type"] == "Q_FP8_DYNAMIC_K_INT8_V_FP8"
    attn = "model.layers.0.self_attn"
    assert {n: meta[n] for n in attention_names(meta) if n.startswith(attn)} == {
        f"{attn}.fa_k.scale": (torch.float32, (KV_HEADS, 1)), f"{attn}.fa_k.offset": (torch.int8, (KV_HEADS, 1)),
        f"{attn}.fa_v.scale": (torch.float32, (KV_HEADS, 1)), f"{attn}.fa_v.offset": (torch.float32, (KV_HEADS, 1)),
    }  # dynamic Q saves nothing; FP8 offsets are float32
    assert "kv_cache_type" not in description and description["fa_quant_type"] == "FAKQuant"
    ids = torch.tensor([list(range(10, 40))])
    assert torch.isfinite(load_quantized_model(model_dir, out)(input_ids=ids).logits).all()


def _parse(item: str):
    data = load_yaml(f"apiversion: modelslim_v1\nspec:\n  process:\n    - {item}\n  save: [{{type: ascendv1_saver}}]\n")
    return parse_quant_config(data, "x.yaml")


@pytest.mark.parametrize(
    "item, message",
    [
        ("{type: dynamic_cache, qconfig: {scope: per_tensor, dtype: int8, symmetric: true, method: minmax}}",
         "spec.process[0].qconfig: scope must be per_channel"),
        ("{type: dynamic_cache, qconfig: {scope: per_channel, dtype: int4, symmetric: true, method: minmax}}", "spec.process[0].qconfig: dtype must be int8"),
        ("{type: fa3_quant, qconfig: {scope: per_head, dtype: int8, symmetric: true, method: minmax}, "
         "details: {fa_q: {scope: per_head, dtype: int8, symmetric: true, method: minmax}}}", "spec.process[0].details.fa_k: this field is required"),
        ("{type: fa3_quant, qconfig: {scope: per_head, dtype: int8, symmetric: false, method: minmax}}", "is not supported for FA3"),
        ("{type: fa3_quant, ratio: 0.9}", "spec.process[0].ratio: unknown field"),
        ("{type: kv_smooth, smooth_factor: 0.0}", "spec.process[0].smooth_factor"),
    ],
)
def test_bad_attention_configs_name_the_field(item, message):
    with pytest.raises(ConfigError) as info:
        _parse(item)
    assert message in str(info.value)


def test_fa3_needs_qconfig_or_details_not_both():
    item = ("{type: fa3_quant, qconfig: {scope: per_head, dtype: int8, symmetric: true, method: minmax}, details: {"
            + ", ".join(f"fa_{b}: {{scope: per_head, dtype: int8, symmetric: true, method: minmax}}" for b in "qkv") + "}}")
    with pytest.raises(ConfigError, match="either qconfig .* or details"):
        _parse(item)


def test_mindie_saver_refuses_c8_before_any_work():
    data = load_yaml("apiversion: modelslim_v1\nspec:\n  process:\n    - " + C8_ASYM + "\n  save: [{type: mindie_format_saver}]\n")
    with pytest.raises(ConfigError, match="mindie_format_saver cannot write C8"):
        parse_quant_config(data, "x.yaml")
