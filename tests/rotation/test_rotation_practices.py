"""`--quant_type w4a4` resolves to the rotation practice for every dense family, and that practice runs."""

from __future__ import annotations

import json

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.practice.library import PracticeLibrary, practice_roots
from modelslim_core.practice.lookup import select_practice
from modelslim_core.reference_runtime import load_quantized_model
from tests.rotation._helpers import load, logits, relative_error


@pytest.mark.parametrize("family, model_type", [("qwen2", "Qwen2-7B"), ("qwen2_5", "Qwen2.5-7B-Instruct"),
                                                ("qwen3", "Qwen3-32B"), ("llama", "Llama-3.1-8B-Instruct")])
def test_w4a4_resolves_to_the_rotation_practice(family, model_type):
    selection = select_practice(PracticeLibrary(practice_roots()), family, model_type, "w4a4")
    assert selection.practice.metadata.config_id.endswith("w4a4-rotation")
    assert selection.tip is None


def test_w4a4_practice_quantizes_and_reloads(tiny_models, tmp_path, cli_env):
    model_dir = tiny_models("qwen2", torch.bfloat16)
    out = tmp_path / "out"
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", quant_type="w4a4", device="cpu", yes=True))
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model_quant_type"] == "W4A4_DYNAMIC"
    assert description["model.layers.0.self_attn.q_proj.weight"] == "W4A4_DYNAMIC"
    assert description["optional"] == {} and description["metadata"] == {}
    expected = logits(load(model_dir))
    assert relative_error(logits(load_quantized_model(model_dir, out)), expected) < 0.5
