"""Today's multimodal families end to end on tiny models built from transformers' config classes: the shipped
practice on a generated image/video set, release names in the checkpoint (vision tower float), reload with the
reference runtime and compare multimodal logits with the float model, and vLLM-Ascend's loader accepts it."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from modelslim.engines.conformance import check_saved
from tests.families._vlm_runs import logits_error, quantize_vlm
from tests.families._tiny_vlm import make_glm46v, make_internvl, make_qwen3_5, make_qwen3_omni

#: tiny model kind -> builder
BUILDERS = {
    "qwen3_5": make_qwen3_5,
    "qwen3_5_moe": lambda target: make_qwen3_5(target, moe=True),
    "glm46v": make_glm46v,
    "internvl": make_internvl,
    "internvl_moe": lambda target: make_internvl(target, moe=True),
    "qwen3_omni_moe": make_qwen3_omni,
}
#: (tiny model kind, --model_type, practice, largest relative logits error, a linear the practice quantizes)
CASES = [
    ("qwen3_5", "Qwen3.5-27B", "qwen3_5/qwen3_5-w8a8.yaml", 0.05,
     "model.language_model.layers.0.linear_attn.in_proj_qkv.weight"),
    ("qwen3_5_moe", "Qwen3.5-35B-A3B", "qwen3_5_moe/qwen3_5_moe-w8a8.yaml", 0.05,
     "model.language_model.layers.3.mlp.experts.2.down_proj.weight"),
    ("qwen3_5_moe", "Qwen3.5-397B-A17B", "qwen3_5_moe/qwen3_5_moe-w4a8.yaml", 0.08,
     "model.language_model.layers.1.mlp.experts.0.gate_proj.weight"),
    ("glm46v", "GLM-4.6V", "glm46v/glm46v-w8a8.yaml", 0.05, "model.language_model.layers.1.mlp.experts.3.up_proj.weight"),
    ("internvl", "InternVL3_5-38B", "internvl/internvl-w8a8.yaml", 0.05,
     "model.language_model.layers.1.self_attn.q_proj.weight"),
    ("internvl_moe", "InternVL3_5-241B-A28B", "internvl/internvl-moe-w8a8.yaml", 0.05,
     "model.language_model.layers.1.self_attn.o_proj.weight"),
    ("qwen3_omni_moe", "Qwen3-Omni-30B-A3B-Instruct", "qwen3_omni_moe/qwen3_omni_moe-w8a8.yaml", 0.05,
     "thinker.model.layers.1.mlp.experts.2.gate_proj.weight"),
]
#: Linears each family keeps float whatever the practice includes.
FLOAT_LINEARS = {
    "qwen3_5": ["model.language_model.layers.0.linear_attn.in_proj_b.weight",
                "model.language_model.layers.0.linear_attn.in_proj_a.weight"],
    "qwen3_5_moe": ["model.language_model.layers.0.linear_attn.in_proj_a.weight",
                    "model.language_model.layers.0.mlp.shared_expert_gate.weight",
                    "model.language_model.layers.0.mlp.gate.weight"],
    "glm46v": ["model.language_model.layers.1.mlp.gate.weight"],
    "internvl": ["model.multi_modal_projector.linear_2.weight"],
    "internvl_moe": ["model.language_model.layers.1.mlp.gate.weight", "model.multi_modal_projector.linear_1.weight",
                     "model.language_model.layers.1.mlp.experts.3.down_proj.weight"],
    "qwen3_omni_moe": ["thinker.model.layers.0.mlp.gate.weight", "thinker.audio_tower.proj2.weight"],
}



@pytest.fixture(scope="module")
def tiny_models(tmp_path_factory):
    built: dict[str, Path] = {}

    def get(kind: str) -> Path:
        if kind not in built:
            built[kind] = BUILDERS[kind](tmp_path_factory.mktemp(kind) / "model")
        return built[kind]

    return get


@pytest.mark.parametrize(("kind", "model_type", "practice", "limit", "quantized"), CASES,
                         ids=[case[2].split("/")[1] for case in CASES])
def test_vlm_family_practice_end_to_end(tiny_models, media_index, tmp_path, monkeypatch, kind, model_type, practice,
                                        limit, quantized):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    model = tiny_models(kind)
    out = quantize_vlm(model, tmp_path / "out", model_type, practice, media_index)
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description[quantized] != "FLOAT"
    for name in FLOAT_LINEARS[kind]:
        assert description[name] == "FLOAT", name
    assert {tag for name, tag in description.items()
            if name.startswith(("model.visual.", "model.vision_tower.", "thinker.visual."))} == {"FLOAT"}
    error = logits_error(model_type, model, out, media_index)
    print(f"{practice}: relative multimodal logits error {error:.4f}")
    assert error < limit
    assert [str(problem) for problem in check_saved(out, "vllm-ascend")] == []
