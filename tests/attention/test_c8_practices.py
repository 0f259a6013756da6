"""`--quant_type w8a8c8` / `w4a8c8` resolve to practices with an int8 KV cache for every dense family, and the
w8a8c8 practice runs end to end and reloads."""

from __future__ import annotations

import json

import pytest
import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.practice import PracticeLibrary, select_practice
from modelslim_core.protocol.config import parse_quant_config

FAMILIES = [("qwen2", "Qwen2-7B-Instruct"), ("qwen2_5", "Qwen2.5-7B-Instruct"), ("qwen3", "Qwen3-8B"),
            ("llama", "Llama-3.1-8B-Instruct")]


def children(practice) -> list:
    return parse_quant_config(practice.data, str(practice.path)).spec.process[0].configs


# Dense w4a8c8 is W8A8_DYNAMIC on every linear: vLLM-Ascend loads int4 W4A8_DYNAMIC only on MoE experts.
@pytest.mark.parametrize("quant_type, bits, linear_types", [("w8a8c8", (8, 8), ["W8A8", "W8A8_DYNAMIC"]),
                                                            ("w4a8c8", (4, 8), ["W8A8_DYNAMIC"])])
@pytest.mark.parametrize("family, model_type", FAMILIES)
def test_c8_practice_of_every_dense_family(family, model_type, quant_type, bits, linear_types):
    selection = select_practice(PracticeLibrary.discover(), family, model_type, quant_type, None)
    assert selection.tip is None  # verified for this model: no confirmation
    practice = selection.practice
    assert practice.metadata.config_id == f"{family.replace('_', '.')}-{quant_type}"
    label = practice.metadata.label
    assert ((label.w_bit, label.a_bit), label.kv_cache) == (bits, True)
    *linears, cache = children(practice)
    assert [c.qconfig.export_type for c in linears if c.type == "linear_quant"] == linear_types
    assert (cache.type, cache.qconfig.scope, cache.qconfig.dtype, cache.export_types()) == ("dynamic_cache", "per_channel", "int8", {"C8"})


@pytest.mark.parametrize("quant_type", ["w8a8c8", "w4a8c8"])
def test_c8_falls_back_to_the_default_practice_for_unknown_models(quant_type):
    selection = select_practice(PracticeLibrary.discover(), "default", "SomeNewModel-7B", quant_type, None)
    assert selection.practice.metadata.config_id == f"default-{quant_type}"
    assert selection.tip is not None  # unverified: the user is asked to confirm
    assert children(selection.practice)[-1].type == "dynamic_cache"


def test_quant_type_w8a8c8_runs_and_reloads(tiny_models, tmp_path):
    from modelslim_core.reference_runtime import load_quantized_model

    def no_prompt(tip: str) -> None:
        raise AssertionError(f"unexpected confirmation: {tip}")

    out = tmp_path / "w8a8c8"
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", quant_type="w8a8c8", device="cpu"), confirm=no_prompt)
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model.layers.1.self_attn.k_proj.kv_cache_scale"] == "C8"
    assert (description["kv_cache_type"], description["kv_quant_type"], description["model_quant_type"]) == ("C8", "C8", "W8A8")
    model = load_quantized_model(tiny_models("qwen2"), out)
    assert torch.isfinite(model(input_ids=torch.arange(5, 30)[None]).logits).all()
