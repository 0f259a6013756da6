"""Qwen3-VL-MoE (Qwen3-VL-30B-A3B, Qwen3-VL-235B-A22B): the Qwen3-VL vision tower with DeepStack and a
Qwen3-MoE language model.

transformers holds each layer's routed experts fused (3-D `gate_up_proj` / `down_proj`, transposed on
disk); `MoEAdapterMixin` splits them into per-expert linears (modelslim_core/models/moe.py), so processors
quantize every expert as its own linear and the saved names are the per-expert ones vLLM-Ascend loads
(`model.language_model.layers.<i>.mlp.experts.<e>.gate_proj.weight`). The router (`mlp.gate`) is a bare
weight and stays float.
"""

from modelslim_core.models.moe import MoEAdapterMixin
from modelslim_vlm.models.base import VlmAdapter
from modelslim_vlm.models.qwen3_vl import QWEN3_VL_STREAM_WRITERS, DeepStackMixin


class Qwen3VLMoeAdapter(DeepStackMixin, MoEAdapterMixin, VlmAdapter):
    family = "qwen3_vl_moe"
    model_types = ("Qwen3-VL-30B-A3B", "Qwen3-VL-30B-A3B-Instruct", "Qwen3-VL-30B-A3B-Thinking",
                   "Qwen3-VL-235B-A22B", "Qwen3-VL-235B-A22B-Instruct", "Qwen3-VL-235B-A22B-Thinking")
    model_type_prefixes = ("Qwen3-VL-",)
    hf_model_types = ("qwen3_vl_moe",)
    model_class_name = "Qwen3VLMoeForConditionalGeneration"
    stream_writers = QWEN3_VL_STREAM_WRITERS
