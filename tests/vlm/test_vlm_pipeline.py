"""The layer-wise VLM pipeline feeds every decoder layer what the model's own forward feeds it.

Capture (media features scattered into the text stream, multimodal position ids), the hand-over between
layers (Qwen3-VL's DeepStack additions) and the towers' recorded calls are checked against hooks on a full
float forward; a run that quantizes the vision tower captures the first layer's inputs again.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelslim_core.models.resolve import create_adapter
from modelslim_core.reference_runtime import load_quantized_model
from modelslim_vlm.pipeline import VlmUnitPipeline
from tests.vlm._helpers import MODEL_TYPES, multimodal_prompt, practice_config, quantize, relative_error

FAMILIES = ["qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen2_5_omni_thinker"]


def _layer_inputs_of_full_forward(model, adapter, inputs) -> list[torch.Tensor]:
    seen: list[torch.Tensor] = []
    hooks = [layer.register_forward_pre_hook(lambda _m, args, kwargs: seen.append(
        (args[0] if args else kwargs["hidden_states"]).clone()), with_kwargs=True)
        for layer in adapter.decoder_layers(model)]
    try:
        with torch.no_grad():
            model(**inputs, use_cache=False)
    finally:
        for hook in hooks:
            hook.remove()
    return seen


@pytest.mark.parametrize("family", FAMILIES)
def test_layer_by_layer_inputs_equal_the_full_forward(family: str, tiny_vlms, media_index: Path):
    model_path = tiny_vlms(family)
    adapter = create_adapter(MODEL_TYPES[family], model_path, False)
    model = adapter.load_model(torch.float32)
    inputs = multimodal_prompt(family, model_path, media_index)
    expected = _layer_inputs_of_full_forward(model, adapter, inputs)
    (item,) = adapter.capture_unit_inputs(model, [inputs])
    assert set(item.tower_calls) == set(adapter.tower_paths)
    assert len(item.tower_calls["model.visual"]) == 2  # the image and the video are two calls of one tower
    if family.startswith("qwen3_vl"):
        assert len(item.extras["deepstack_visual_embeds"]) == 1 and item.extras["visual_pos_masks"].any()
    with torch.no_grad():
        for index, layer in enumerate(adapter.decoder_layers(model)):
            torch.testing.assert_close(item.args[0], expected[index], rtol=1e-5, atol=1e-5)
            item = adapter.next_unit_input(layer(*item.args, **item.kwargs), item)


TOWER_LINEARS = {"qwen3_vl": (["model.visual.blocks.*"], "model.visual.blocks.0.attn.qkv.weight"),
                 "qwen2_5_omni_thinker": (["model.visual.blocks.*", "model.audio_tower.layers.*"],
                                          "thinker.audio_tower.layers.1.fc1.weight")}


@pytest.mark.parametrize("family", list(TOWER_LINEARS))
def test_quantized_towers_are_calibrated_and_recaptured(family: str, tiny_vlms, media_index: Path, tmp_path: Path,
                                                        monkeypatch):
    """Quantizing the towers too (static activations: calibrated on the towers' recorded calls): the decoder
    layers are then calibrated on the quantized towers' features."""
    include, saved_linear = TOWER_LINEARS[family]
    config = practice_config(family, media_index)
    config["spec"]["process"][0]["configs"].append({
        "type": "linear_quant", "include": include,
        "qconfig": {"act": {"scope": "per_tensor", "dtype": "int8", "symmetric": False, "method": "minmax"},
                    "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}}})
    recaptures = []
    original = VlmUnitPipeline._recapture
    monkeypatch.setattr(VlmUnitPipeline, "_recapture", lambda self: recaptures.append(1) or original(self))
    out = quantize(family, tiny_vlms(family), tmp_path / "out", config)
    assert recaptures == [1]
    description = (out / "quant_model_description.json").read_text()
    assert f'"{saved_linear}": "W8A8"' in description
    model_path = tiny_vlms(family)
    inputs = multimodal_prompt(family, model_path, media_index)
    float_model = create_adapter(MODEL_TYPES[family], model_path, False).load_model(torch.float32)
    with torch.no_grad():
        error = relative_error(float_model(**inputs).logits, load_quantized_model(model_path, out)(**inputs).logits)
    assert error < 0.08


def test_float_towers_are_not_forwarded_again(tiny_vlms, media_index: Path, tmp_path: Path, monkeypatch):
    """With the shipped practice no processor touches the towers: they run once per sample, in the capture."""
    calls = []
    monkeypatch.setattr(VlmUnitPipeline, "_forward_tower", lambda self, unit, inputs: calls.append(unit.name))
    monkeypatch.setattr(VlmUnitPipeline, "_recapture", lambda self: pytest.fail("recaptured with float towers"))
    family = "qwen2_5_omni_thinker"
    quantize(family, tiny_vlms(family), tmp_path / "out", practice_config(family, media_index))
    assert calls == []
