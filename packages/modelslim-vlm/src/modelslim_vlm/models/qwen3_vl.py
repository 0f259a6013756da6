"""Qwen3-VL (dense): vision tower with DeepStack — features of some vision layers are added to the hidden
states of the image/video positions after the first decoder layers — and a Qwen3 language model.

Checkpoint names equal the module names (`model.visual.*`, `model.language_model.*`, `lm_head.*`).
"""

from __future__ import annotations

from typing import Any

import torch

from modelslim_vlm.models.base import VlmAdapter
from modelslim_vlm.models.sample_input import VlmSampleInput

DEEPSTACK_KWARGS = ("visual_pos_masks", "deepstack_visual_embeds")
#: The merger and the DeepStack mergers write vision features into the language model's residual stream.
QWEN3_VL_STREAM_WRITERS = ("model.visual.merger.linear_fc2", "model.visual.deepstack_merger_list.*.linear_fc2")


class DeepStackMixin:
    """Replays the language model's DeepStack step between decoder layers, as its own forward does."""

    def language_model_extras(self, kwargs: dict[str, Any]) -> dict[str, Any]:
        return {key: kwargs[key] for key in DEEPSTACK_KWARGS if kwargs.get(key) is not None}

    def after_layer(self, hidden: torch.Tensor, sample: VlmSampleInput) -> torch.Tensor:
        embeds = sample.extras.get("deepstack_visual_embeds")
        if not embeds or sample.layer >= len(embeds):
            return hidden
        mask = sample.extras["visual_pos_masks"].to(hidden.device)
        hidden = hidden.clone()
        hidden[mask, :] = hidden[mask, :] + embeds[sample.layer].to(hidden.device, hidden.dtype)
        return hidden


class Qwen3VLAdapter(DeepStackMixin, VlmAdapter):
    family = "qwen3_vl"
    model_types = ("Qwen3-VL-2B-Instruct", "Qwen3-VL-4B-Instruct", "Qwen3-VL-8B-Instruct", "Qwen3-VL-32B-Instruct")
    model_type_prefixes = ("Qwen3-VL-",)
    hf_model_types = ("qwen3_vl",)
    model_class_name = "Qwen3VLForConditionalGeneration"
    stream_writers = QWEN3_VL_STREAM_WRITERS
