"""InternVL3.5 (InternVL3_5-38B with a Qwen3 language model, InternVL3_5-241B-A28B with a Qwen3-MoE one), in the
Hugging Face layout (`model.vision_tower`, `model.multi_modal_projector`, `model.language_model`).

Units: the InternViT tower and the projector (the release's `mlp1`: layer norm, two linears after a pixel
shuffle) are each one unit, processed whole and kept float; then the language model's decoder layers. The
projector's last linear writes image features into the residual stream, so QuaRot / adapt_rotation rotate it
with the token embeddings (`stream_writers`). MoE language models get per-expert linears (models/moe.py), the
router (a bare weight) stays float.
"""

from __future__ import annotations

from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_vlm.models.base import VlmAdapter


class InternVLAdapter(MoEAdapterMixin, VlmAdapter):
    family = "internvl"
    model_types = ("InternVL3_5-38B", "InternVL3_5-241B-A28B", "InternVL3_5-38B-HF", "InternVL3_5-241B-A28B-HF")
    model_type_prefixes = ("InternVL3_5-", "InternVL3.5-")
    hf_model_types = ("internvl",)
    model_class_name = "InternVLForConditionalGeneration"
    tower_paths = ("model.vision_tower", "model.multi_modal_projector")
    stream_writers = ("model.multi_modal_projector.linear_2",)
