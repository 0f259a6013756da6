"""A diffusers pipeline no generation adapter handles gets a message naming its class and the supported model
types, not "no config.json"."""

from __future__ import annotations

import json

import pytest

from modelslim_core.errors import ModelError
from modelslim_core.models.resolve import create_adapter
from modelslim_core.models.unsupported_pipeline import sd_model_types


def test_unsupported_pipeline_names_its_class_and_the_supported_types(tmp_path):
    (tmp_path / "model_index.json").write_text(json.dumps(
        {"_class_name": "StableDiffusion3Pipeline", "transformer": ["diffusers", "SD3Transformer2DModel"]}))
    with pytest.raises(ModelError) as error:
        create_adapter("SD3-medium", tmp_path, False)
    message = str(error.value)
    assert "is a diffusers pipeline (StableDiffusion3Pipeline)" in message
    assert "model type 'SD3-medium' is not supported by the multimodal_sd_modelslim_v1 service" in message
    assert "Wan2.1" in message and "config.json" not in message
    assert "Wan2.1" in sd_model_types()
