"""Qwen3-Omni (30B-A3B Instruct / Thinking), thinker only: an audio tower, a vision tower with DeepStack
mergers and a Qwen3-MoE language model. The talker, its code predictor and the vocoder (speech output) are not
quantized and not saved.

As for Qwen2.5-Omni, `model_path` may hold the full release (config model_type `qwen3_omni_moe`, weights under
`thinker.`, `talker.`, `code2wav.`) or a thinker alone; saved names carry the release's `thinker.` prefix.
The towers are one unit each, processed whole and kept float; their output projections (the audio tower's
`proj2`, the vision mergers' last linears) write into the residual stream (`stream_writers`). Routed experts
are split per expert (models/moe.py); the router stays float. DeepStack features are added between the first
decoder layers as the language model does (qwen3_vl.DeepStackMixin).
"""

from __future__ import annotations

from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_vlm.models.qwen2_5_omni import Qwen25OmniThinkerAdapter
from modelslim_vlm.models.qwen3_vl import DeepStackMixin


class Qwen3OmniThinkerAdapter(DeepStackMixin, MoEAdapterMixin, Qwen25OmniThinkerAdapter):
    family = "qwen3_omni_moe"
    model_types = ("Qwen3-Omni-30B-A3B-Instruct", "Qwen3-Omni-30B-A3B-Thinking", "Qwen3-Omni-30B-A3B-Captioner")
    model_type_prefixes = ("Qwen3-Omni-",)
    hf_model_types = ("qwen3_omni_moe", "qwen3_omni_moe_thinker")
    model_class_name = "Qwen3OmniMoeThinkerForConditionalGeneration"
    stream_writers = ("model.audio_tower.proj2", "model.visual.merger.mlp.2", "model.visual.merger_list.*.mlp.2")
    full_model_type = "qwen3_omni_moe"
    full_config_class = "Qwen3OmniMoeConfig"
