"""`--quant_type w16a16s`, `w8a8s` and `w4a4` resolve for every dense family without confirmation, and the
sparse ones run end to end and reload through the reference runtime."""

from __future__ import annotations

import json

import pytest

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.practice import PracticeLibrary, select_practice
from modelslim_core.protocol.config import parse_quant_config
from modelslim_core.reference_runtime import load_quantized_model

FAMILIES = [("qwen2", "Qwen2-7B-Instruct"), ("qwen2_5", "Qwen2.5-7B-Instruct"), ("qwen3", "Qwen3-8B"),
            ("llama", "Llama-3.1-8B-Instruct"), ("default", "MyModel-1B")]
EXPECTED = {  # quant type -> (processor type, label bits and sparsity, export types)
    "w16a16s": ("float_sparse", (16, 16, True), {"W16A16S"}),
    "w8a8s": ("sparse_quant", (8, 8, True), {"W8A8S"}),
    "w4a4": ("autoround_quant", (4, 4, False), {"W4A4_DYNAMIC"}),
}


@pytest.mark.parametrize("quant_type", sorted(EXPECTED))
@pytest.mark.parametrize("family,model_type", FAMILIES)
def test_practice_of_every_dense_family(family, model_type, quant_type):
    selection = select_practice(PracticeLibrary.discover(), family, model_type, quant_type, None)
    practice = selection.practice
    assert practice.pedigree == family and practice.metadata.config_id == f"{family.replace('_', '.')}-{quant_type}"
    if family != "default":
        assert selection.tip is None  # an explicit, verified hit: no confirmation
    label = practice.metadata.label
    processor, bits, exports = EXPECTED[quant_type]
    assert (label.w_bit, label.a_bit, label.is_sparse) == bits
    (config,) = parse_quant_config(practice.data, str(practice.path)).spec.process
    assert config.type == processor and config.export_types() == exports


@pytest.mark.parametrize("quant_type,tag,kernel", [("w16a16s", "W16A16S", "W16A16SLinear"), ("w8a8s", "W8A8S", "W8A8StaticLinear")])
def test_sparse_quant_types_run_and_reload(quant_type, tag, kernel, tiny_models, tmp_path):
    def no_prompt(tip: str) -> None:
        raise AssertionError(f"unexpected confirmation: {tip}")

    out = tmp_path / quant_type
    # vLLM-Ascend loads neither (refused without a tag): W16A16S is for MindIE, W8A8S for Atlas 300I (310P).
    tags = {"w16a16s": ["MindIE"], "w8a8s": ["310P"]}[quant_type]
    run_quant(QuantArgs(str(tiny_models("qwen2")), str(out), "Qwen2-demo", quant_type=quant_type, device="cpu",
                        tags=tags), confirm=lambda tip: None)
    description = json.loads((out / "quant_model_description.json").read_text())
    assert description["model_quant_type"] == tag
    assert description["model.layers.1.mlp.down_proj.weight"] == tag
    layers = json.loads((out / "quant_report.json").read_text())["layers"]
    down = layers["model.layers.1.mlp.down_proj"]  # the error of pruning (and quantizing) is reported
    assert down["type"] == tag and 0.05 < down["weight_rel_error"] < 1
    model = load_quantized_model(tiny_models("qwen2"), out)
    assert type(model.model.layers[0].mlp.up_proj).__name__ == kernel
