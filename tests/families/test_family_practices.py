"""Today's families end to end on tiny models built from transformers' config classes: the shipped practice
(its dataset swapped for a tiny one), quantize, check every saved tensor has the release's own name, reload
with the reference runtime and compare with the float model."""

from __future__ import annotations

import pytest
import torch
import yaml
from safetensors import safe_open

from modelslim.engines.conformance import check_saved
from tests.families._helpers import float_relative_error, quantize, saved
from tests.families._tiny import make_family_model
from tests.tiny_models import REPO, make_tiny_model

#: (tiny model kind, --model_type, practice file, largest accepted relative logits error)
CASES = [
    ("glm4_moe", "GLM-4.7", "glm4_moe/glm4_moe-w8a8.yaml", 0.06),
    ("glm4_moe_lite", "GLM-4.7-Flash", "glm4_moe_lite/glm4_moe_lite-w8a8.yaml", 0.06),
    ("glm_moe_dsa", "GLM-5.1", "glm_5/glm_5-w8a8.yaml", 0.06),
    ("glm_moe_dsa", "GLM-5", "glm_5/glm_5-w4a8.yaml", 0.06),
    ("deepseek_v3", "Kimi-K2-Thinking", "kimi_k2/kimi_k2-w8a8.yaml", 0.06),
    ("minimax_m2", "MiniMax-M2.7", "minimax_m2/minimax_m2-w8a8.yaml", 0.06),
    ("qwen3_next", "Qwen3-Next-80B-A3B-Instruct", "qwen3_next/qwen3_next-w8a8.yaml", 0.06),
    ("longcat_flash", "LongCat-Flash-Chat", "longcat_flash/longcat_flash-w8a8.yaml", 0.06),
    ("deepseek_v4", "DeepSeek-V4-Flash", "deepseek_v4/deepseek_v4-w8a8.yaml", 0.06),
    ("deepseek_v4", "DeepSeek-V4-Pro", "deepseek_v4/deepseek_v4-w4a8.yaml", 0.08),
]


@pytest.fixture(scope="module")
def family_models(tmp_path_factory):
    built = {}

    def get(kind: str):
        if kind not in built:
            target = tmp_path_factory.mktemp(kind) / "model"
            built[kind] = make_tiny_model(target, kind) if kind == "deepseek_v3" else make_family_model(target, kind)
        return built[kind]

    return get


def _tiny_practice(practice: str, tmp_path) -> str:
    data = yaml.safe_load((REPO / "practices" / practice).read_text(encoding="utf-8"))
    data["spec"]["save"][0]["part_file_size"] = 0
    if "dataset" in data["spec"]:
        dataset = tmp_path / "calib.jsonl"
        dataset.write_text('{"text": "Family calibration: 1 2 3, the quick brown fox."}\n'
                           '{"text": "def f(x):\\n    return x * 2"}\n')
        data["spec"]["dataset"] = str(dataset)
    path = tmp_path / "practice.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def _source_names(model_dir) -> set[str]:
    with safe_open(model_dir / "model.safetensors", framework="pt") as handle:
        return set(handle.keys())


def engine_problems(out, kind: str) -> list[str]:
    """vLLM-Ascend's loader's objections. DeepSeek-V4 releases name experts w1/w2/w3; vLLM-Ascend renames them to
    gate_proj/down_proj/up_proj through its own per-model table before looking them up, which the harness's expert
    check does not apply yet, so for a model whose table does that the expert-name objection is not counted."""
    from modelslim.engines.stubs import hardware_stubs

    with hardware_stubs(lambda: None):
        from vllm_ascend.quantization.modelslim_config import QUANT_MODEL_SUBSTR_MAPPINGS

        renamed = {old.strip(".") for old in QUANT_MODEL_SUBSTR_MAPPINGS.get(kind, {})}
    found = [str(problem) for problem in check_saved(out, "vllm-ascend")]
    return [p for p in found if not ({"w1", "w2", "w3"} <= renamed and "expert projections named w1, w2, w3" in p)]


@pytest.mark.parametrize(("kind", "model_type", "practice", "limit"), CASES, ids=[c[2].split("/")[1] for c in CASES])
def test_family_practice_quantizes_reloads_and_keeps_release_names(family_models, tmp_path, kind, model_type,
                                                                   practice, limit):
    model_dir = family_models(kind)
    out = quantize(model_dir, tmp_path / "out", model_type, _tiny_practice(practice, tmp_path))
    description, metas = saved(out)
    source = _source_names(model_dir)
    prefixes = {name.rpartition(".")[0] for name in source}
    for name in metas:
        # a float tensor keeps its name; a quantized linear's tensors (weight_scale, deq_scale, ...) sit under it
        assert name in source or name.rpartition(".")[0] in prefixes, f"{name} is not under a release name"
    quantized = [n for n, tag in description.items() if n.endswith(".weight") and tag != "FLOAT"]
    assert quantized, "the practice quantized nothing"
    error = float_relative_error(model_dir, out)
    print(f"{practice}: {len(quantized)} quantized linears, relative logits error {error:.4f}")
    assert error < limit
    assert engine_problems(out, kind) == []


#: Tags that show which linears a family keeps float (and that its neighbours are quantized).
EXPECTED_TAGS = {
    ("qwen3_next", "Qwen3-Next-80B-A3B-Instruct", "qwen3_next/qwen3_next-w8a8.yaml"): {
        "model.layers.0.linear_attn.in_proj_ba.weight": "FLOAT",
        "model.layers.0.mlp.shared_expert_gate.weight": "FLOAT",
        "model.layers.0.linear_attn.in_proj_qkvz.weight": "FLOAT",  # vLLM-Ascend fuses it with in_proj_ba
        "model.layers.0.linear_attn.out_proj.weight": "W8A8_DYNAMIC",
        "model.layers.3.self_attn.q_proj.weight": "W8A8",
    },
    ("minimax_m2", "MiniMax-M2.7", "minimax_m2/minimax_m2-w8a8.yaml"): {
        "model.layers.1.block_sparse_moe.gate.weight": "FLOAT",
        "model.layers.1.block_sparse_moe.experts.2.w1.weight": "W8A8_DYNAMIC",
        "lm_head.weight": "FLOAT",
    },
}


@pytest.mark.parametrize("case", list(EXPECTED_TAGS), ids=lambda case: case[0])
def test_float_linears_stay_float(family_models, tmp_path, case):
    """Qwen3-Next's in_proj_ba and shared-expert gate and MiniMax-M2's router are never quantized."""
    kind, model_type, practice = case
    description = saved(quantize(family_models(kind), tmp_path / "out", model_type, _tiny_practice(practice, tmp_path)))[0]
    assert {name: description[name] for name in EXPECTED_TAGS[case]} == EXPECTED_TAGS[case]


def test_minimax_layer_wise_reads_release_names_lazily(family_models, tmp_path, caplog):
    """Layer-wise loading finds `block_sparse_moe.experts.<e>.w1` for `mlp.experts.<e>.gate_proj` (no fallback to
    loading the whole model) and writes the same checkpoint as a model-wise run."""
    model_dir = family_models("minimax_m2")
    outs = {}
    for runner in ("layer_wise", "model_wise"):
        practice = _tiny_practice("minimax_m2/minimax_m2-w8a8.yaml", tmp_path)
        data = yaml.safe_load(practice.read_text())
        data["spec"]["runner"] = runner
        practice.write_text(yaml.safe_dump(data, sort_keys=False))
        with caplog.at_level("WARNING"):
            outs[runner] = quantize(model_dir, tmp_path / runner, "MiniMax-M2.7", practice)
    assert "loading the whole model" not in caplog.text
    layer_wise, model_wise = saved(outs["layer_wise"])[1], saved(outs["model_wise"])[1]
    assert layer_wise == model_wise
