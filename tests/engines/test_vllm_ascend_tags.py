"""Every export tag against vLLM-Ascend 0.23.0's own loader: what we write for it loads exactly (names, dtypes,
shapes after its q/k/v and gate/up fusion, the globals it reads, nothing extra), in bf16 and in fp16; what it
would not load is caught by the same harness when written anyway for another engine."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from tests.engines._harness import C8_ITEM, FA3_ITEM, config_yaml, problems, problems_at, quantize
from tests.tiny_models import make_tiny_model

#: Every tag vLLM-Ascend loads, one per fused engine layer (q/k/v share one, gate/up share one).
LOADABLE = {
    "model.layers.0.self_attn.[qkv]_proj": "W8A8",
    "model.layers.0.self_attn.o_proj": "W8A8_MIX",
    "model.layers.0.mlp.[gu][ap]*_proj": "W8A8_DYNAMIC",
    "model.layers.0.mlp.down_proj": "W8A16",
    "model.layers.1.self_attn.[qkv]_proj": "W4A4_DYNAMIC",
    "model.layers.1.self_attn.o_proj": "W8A8FP8_DYNAMIC",
    "model.layers.1.mlp.[gu][ap]*_proj": "W8A8_MXFP8",
    "model.layers.1.mlp.down_proj": "W4A8_MXFP",
    "model.layers.2.self_attn.*": "W4A4_MXFP4",
    "model.layers.2.mlp.*": "W8A16_ASYM",
}


@pytest.fixture(scope="module")
def calib(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("calib") / "calib.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in (
        "The serving engine is the judge of the checkpoint.", "def f(x):\n    return 3 * x + 1", "量化。")) + "\n")
    return path


@pytest.fixture(scope="module")
def three_layers(tmp_path_factory):
    cache = {}

    def get(dtype: torch.dtype) -> Path:
        if dtype not in cache:
            cache[dtype] = make_tiny_model(tmp_path_factory.mktemp(f"qwen2-3l-{dtype}"), "qwen2", dtype,
                                           num_hidden_layers=3)
        return cache[dtype]

    return get


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16])
def test_every_loadable_tag_matches_what_vllm_ascend_allocates(three_layers, calib, tmp_path, dtype):
    out = quantize(three_layers(dtype), tmp_path / "out", config_yaml(LOADABLE, calib, (C8_ITEM,)))
    description = json.loads((out / "quant_model_description.json").read_text())
    tags = {value for value in description.values() if isinstance(value, str)}
    assert {"W8A8", "W8A8_MIX", "W8A8_DYNAMIC", "W8A16", "W4A4_DYNAMIC", "W8A8FP8_DYNAMIC", "W8A8_MXFP8",
            "W4A8_MXFP", "W4A4_MXFP4", "C8"} <= tags
    assert description["metadata"]["serving_dtype"] == str(dtype).removeprefix("torch.")
    assert problems(out) == []


@pytest.fixture(scope="module")
def unloadable(three_layers, calib, tmp_path_factory) -> Path:
    """What vLLM-Ascend refuses at YAML load, written anyway (targeting MindIE LLM, which is not checked)."""
    slots = {
        "model.layers.0.self_attn.[qkv]_proj": "W8A8_DYNAMIC_GROUP",
        "model.layers.0.self_attn.o_proj": "W8A16_GROUP",
        "model.layers.0.mlp.[gu][ap]*_proj": "W4A4_DYNAMIC_GROUP",
        "model.layers.0.mlp.down_proj": "W4A8_DYNAMIC",
        "model.layers.1.self_attn.[qkv]_proj": "W4A4_DYNAMIC_ASYM",
        "model.layers.1.mlp.*": "W8A8",
        "model.layers.2.*": "W8A8",
    }
    sparse = "{type: float_sparse, include: ['model.layers.1.self_attn.o_proj']}"
    out = tmp_path_factory.mktemp("unloadable") / "out"
    return quantize(three_layers(torch.bfloat16), out, config_yaml(slots, calib, (FA3_ITEM, sparse)), tags=["MindIE"])


@pytest.mark.parametrize("layer, expected", [
    ("model.layers.0.self_attn.q_proj.weight_scale", "shape [64, 2], but vLLM-Ascend's W8A8_DYNAMIC scheme allocates [64, 1]"),
    ("model.layers.0.self_attn.o_proj.weight_scale", "shape [64, 2], but vLLM-Ascend's W8A16 scheme allocates [64, 1]"),
    ("model.layers.0.mlp.gate_proj.weight_scale", "shape [128, 2], but vLLM-Ascend's W4A4_DYNAMIC scheme allocates [128, 1]"),
    ("model.layers.0.mlp.down_proj.weight_scale_second", "W4A8_DYNAMIC scheme reads this parameter, but the checkpoint holds no tensor"),
    ("model.layers.1.self_attn.q_proj.weight_offset", "W4A4_DYNAMIC kernel ignores weight_offset"),
    ("model.layers.1.self_attn.o_proj", "vLLM-Ascend refuses this layer: NotImplementedError"),
    ("model.layers.0.self_attn", "FAQuant scales on non-MLA attention"),
])
def test_the_harness_catches_what_vllm_ascend_would_not_load(unloadable, layer, expected):
    found = problems(unloadable)
    assert any(expected in line for line in problems_at(found, layer)), "\n".join(found)


def test_a_bf16_checkpoint_served_in_fp16_gets_the_wrong_deq_scale(three_layers, calib, tmp_path):
    out = quantize(three_layers(torch.bfloat16), tmp_path / "out", config_yaml({"*": "W8A8"}, calib))
    description_file = out / "quant_model_description.json"
    description = json.loads(description_file.read_text())
    description["metadata"]["serving_dtype"] = "float16"  # as if served with --dtype float16
    description_file.write_text(json.dumps(description))
    found = problems(out)
    assert found and all("deq_scale: is float32 but vLLM-Ascend allocates int64" in line for line in found), found


def test_the_reference_fp8_tag_is_refused_by_the_engine(three_layers, calib, tmp_path):
    out = quantize(three_layers(torch.bfloat16), tmp_path / "out", config_yaml({"*": "W8A8FP8_DYNAMIC"}, calib))
    description_file = out / "quant_model_description.json"
    text = description_file.read_text().replace("W8A8FP8_DYNAMIC", "WFP8AFP8_DYNAMIC")
    description_file.write_text(text)
    found = problems(out)
    assert found and all("NotImplementedError" in line and "WFP8AFP8_DYNAMIC" in line for line in found), found
