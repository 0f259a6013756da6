"""Qwen2.5-VL, Qwen3-VL and the Qwen2.5-Omni thinker end to end: the shipped w8a8 practice on a generated
image/audio/video set → ascendv1 checkpoint with the names of the checkpoint on disk → the reference
runtime reloads it (mapping names with transformers' own rules) and its logits on a multimodal prompt match
the float model within the quantization error."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors import safe_open

from modelslim_core.models.resolve import create_adapter
from modelslim_core.reference_runtime import load_quantized_model
from tests.vlm._helpers import MODEL_TYPES, multimodal_prompt, practice_config, quantize, relative_error

#: Saved-name prefixes per family: the layout of each family's released checkpoints.
CHECKPOINT_LAYOUT = {
    "qwen2_5_vl": {"tower": "visual.", "layers": "model.layers.", "other": ("model.embed_tokens.", "model.norm.", "lm_head.")},
    "qwen3_vl": {"tower": "model.visual.", "layers": "model.language_model.layers.",
                 "other": ("model.language_model.embed_tokens.", "model.language_model.norm.", "lm_head.")},
    "qwen3_vl_moe": {"tower": "model.visual.", "layers": "model.language_model.layers.",
                     "other": ("model.language_model.embed_tokens.", "model.language_model.norm.", "lm_head.")},
    "qwen2_5_omni_thinker": {"tower": "thinker.visual.", "layers": "thinker.model.layers.",
                             "other": ("thinker.audio_tower.", "thinker.model.embed_tokens.", "thinker.model.norm.",
                                       "thinker.lm_head.")},
}
FAMILIES = list(CHECKPOINT_LAYOUT)


def test_moe_experts_are_saved_per_expert_and_router_float(outputs: dict[str, Path]):
    description = json.loads((outputs["qwen3_vl_moe"] / "quant_model_description.json").read_text())
    layer = "model.language_model.layers.0.mlp"
    assert description[f"{layer}.gate.weight"] == "FLOAT"
    for expert in range(4):
        for proj in ("gate_proj", "up_proj", "down_proj"):
            assert description[f"{layer}.experts.{expert}.{proj}.weight_scale"] == "W8A8_DYNAMIC"
    assert not any(k.endswith(("experts.gate_up_proj", "experts.down_proj")) for k in description)


@pytest.fixture(scope="module")
def outputs(tiny_vlms, media_index: Path, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    tmp = tmp_path_factory.mktemp("vlm-e2e")
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("HF_HUB_OFFLINE", "1")
        return {f: quantize(f, tiny_vlms(f), tmp / f, practice_config(f, media_index)) for f in FAMILIES}


def _saved_names(out: Path) -> list[str]:
    with safe_open(out / "quant_model_weights-00001-of-00001.safetensors", framework="pt") as handle:
        return list(handle.keys())


@pytest.mark.parametrize("family", FAMILIES)
def test_checkpoint_uses_on_disk_names_and_tags(family: str, outputs: dict[str, Path]):
    out = outputs[family]
    layout = CHECKPOINT_LAYOUT[family]
    description = json.loads((out / "quant_model_description.json").read_text())
    names = _saved_names(out)
    assert set(names) == {k for k in description if k not in ("version", "model_quant_type", "metadata", "group_size", "optional")}
    assert all(n.startswith((layout["tower"], layout["layers"], *layout["other"])) for n in names)
    layers = layout["layers"]
    assert description[f"{layers}0.self_attn.q_proj.weight"] == "W8A8"
    assert description[f"{layers}1.self_attn.o_proj.deq_scale"] == "W8A8"
    mlp = f"{layers}1.mlp.experts.3" if family == "qwen3_vl_moe" else f"{layers}1.mlp"
    assert description[f"{mlp}.down_proj.weight"] == description[f"{mlp}.gate_proj.weight"] == "W8A8_DYNAMIC"
    assert {description[n] for n in names if n.startswith(layout["tower"])} == {"FLOAT"}  # towers stay float
    assert description["model_quant_type"] == "W8A8" and description["version"] == "1.0.0"  # globals unprefixed
    first = next(iter(description))  # the description keeps write order: towers first, then the layers
    assert first.startswith(layout["tower"]) or first.startswith("thinker.audio_tower.")
    index = json.loads((out / "quant_model_weights.safetensors.index.json").read_text())
    assert set(index["weight_map"]) == set(names) and "total_size" in index["metadata"]
    for side_file in ("config.json", "processor_config.json", "tokenizer.json", "chat_template.jinja"):
        assert (out / side_file).is_file(), side_file


@pytest.mark.parametrize("family", FAMILIES)
def test_reference_runtime_logits_match_float(family: str, outputs: dict[str, Path], tiny_vlms, media_index: Path):
    model_path = tiny_vlms(family)
    inputs = multimodal_prompt(family, model_path, media_index)
    assert "pixel_values" in inputs and "pixel_values_videos" in inputs
    assert ("input_features" in inputs) == (family == "qwen2_5_omni_thinker")
    quantized = load_quantized_model(model_path, outputs[family])
    float_model = create_adapter(MODEL_TYPES[family], model_path, False).load_model(torch.float32)
    with torch.no_grad():
        reference = float_model(**inputs).logits
        logits = quantized(**inputs).logits
    error = relative_error(reference, logits)
    print(f"{family}: relative logits error {error:.4f}")
    assert 1e-4 < error < 0.05
    agree = (reference.argmax(-1) == logits.argmax(-1)).float().mean().item()
    assert agree > 0.9
