"""QuaRot and adapt_rotation on every VLM adapter: the language model inside a ForConditionalGeneration is
rotated (final norm found under the language model), tower units are left in their own basis, and the
mergers that write vision/audio features into the residual stream are rotated with the embeddings, so the
float model's logits on a multimodal prompt are unchanged (regression: "...model.norm does not exist")."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from modelslim_core.models.resolve import create_adapter
from modelslim_core.reference_runtime import load_quantized_model
from tests.vlm._helpers import MODEL_TYPES, multimodal_prompt, practice_config, quantize, relative_error

DYNAMIC_W8A8 = {"act": {"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"},
                "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}}
ROTATIONS = {
    "quarot": [{"type": "quarot"}],
    "adapt_rotation": [{"type": "adapt_rotation", "stage": 2}],
}


def _run(family: str, rotation: str, tiny_vlms, media_index: Path, tmp_path: Path) -> float:
    model = tiny_vlms(family)
    process = ROTATIONS[rotation] + [{"type": "linear_quant", "qconfig": DYNAMIC_W8A8, "include": ["*layers.*"]}]
    config = practice_config(family, media_index, process=process)
    config["spec"].pop("prior", None)
    out = quantize(family, model, tmp_path / "out", config)
    inputs = multimodal_prompt(family, model, media_index)
    float_model = create_adapter(MODEL_TYPES[family], model, False).load_model(torch.float32)
    with torch.no_grad():
        reference = float_model(**inputs).logits
        logits = load_quantized_model(model, out)(**inputs).logits
    return relative_error(reference, logits)


@pytest.mark.parametrize("family", ["qwen2_5_vl", "qwen3_vl", "qwen3_vl_moe", "qwen2_5_omni_thinker"])
def test_quarot_on_vlm_keeps_multimodal_logits(family, tiny_vlms, media_index, tmp_path):
    error = _run(family, "quarot", tiny_vlms, media_index, tmp_path)
    assert error < 0.05, error


def test_adapt_rotation_on_vlm(tiny_vlms, media_index, tmp_path):
    assert _run("qwen3_vl", "adapt_rotation", tiny_vlms, media_index, tmp_path) < 0.05


def test_unrotated_merger_would_be_caught(tiny_vlms):
    """Without the merger rotated the image positions carry unrotated features: the layout must name it."""
    adapter = create_adapter(MODEL_TYPES["qwen3_vl"], tiny_vlms("qwen3_vl"), False)
    layout = adapter.rotation_layout
    assert layout.final_norm == "model.language_model.norm"
    assert "model.visual.merger.linear_fc2" in layout.stream_writers
