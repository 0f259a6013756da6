"""Routed experts stored stacked over experts (Step-3.7's `moe.gate_proj.weight` [E, I, H]) split back into the
runtime's per-expert modules, by transformers' own load-time rules for the model."""

from __future__ import annotations

import torch

from modelslim_core.models.moe import prepare_moe_model
from modelslim_core.reference_runtime.multimodal import saved_to_module_name
from modelslim_core.reference_runtime.stacked_experts import stacked_expert_parts
from tests.families._tiny_vlm import STEP3P7_TEXT, STEP3P7_VISION


def _per_expert_step3p7():
    from transformers import Step3p7Config, Step3p7ForConditionalGeneration

    with torch.device("meta"):
        model = Step3p7ForConditionalGeneration(Step3p7Config(text_config=STEP3P7_TEXT, vision_config=STEP3P7_VISION))
    return prepare_moe_model(model)


def test_each_expert_is_its_row_of_the_stacked_tensor():
    model = _per_expert_step3p7()
    to_module, parts_of = saved_to_module_name(model), stacked_expert_parts(model)
    stacked = torch.arange(4.0).reshape(4, 1, 1).expand(4, 2, 3)  # expert e's rows are all e
    for saved, leaf in (("model.layers.1.moe.gate_proj.weight", "gate_proj"), ("model.layers.2.moe.up_proj.weight", "up_proj"),
                        ("model.layers.2.moe.down_proj.weight", "down_proj")):
        parts = parts_of(to_module(saved))
        layer = saved.split(".")[2]
        assert [name for name, _ in parts] == [f"model.language_model.layers.{layer}.mlp.experts.{e}.{leaf}.weight"
                                               for e in range(4)], saved
        assert [extract(stacked).unique().item() for _, extract in parts] == [0.0, 1.0, 2.0, 3.0]


def test_other_tensors_are_not_split():
    model = _per_expert_step3p7()
    to_module, parts_of = saved_to_module_name(model), stacked_expert_parts(model)
    for saved in ("model.layers.1.moe.gate.weight", "model.layers.1.share_expert.up_proj.weight",
                  "model.layers.0.mlp.down_proj.weight", "vit_large_projector.weight"):
        assert parts_of(to_module(saved)) == [], saved
