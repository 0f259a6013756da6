"""Qwen2.5-VL: a windowed-attention vision tower and a Qwen2 language model with 3-D (M-RoPE) positions.

Its checkpoints keep the layout of older transformers (`visual.*`, `model.layers.*`, `lm_head.*`), while
transformers now nests both under `model.`; saved names follow the checkpoint.
"""

from modelslim_vlm.models.base import VlmAdapter


class Qwen25VLAdapter(VlmAdapter):
    family = "qwen2_5_vl"
    model_types = ("Qwen2.5-VL-3B-Instruct", "Qwen2.5-VL-7B-Instruct", "Qwen2.5-VL-32B-Instruct",
                   "Qwen2.5-VL-72B-Instruct")
    model_type_prefixes = ("Qwen2.5-VL-",)
    hf_model_types = ("qwen2_5_vl",)
    model_class_name = "Qwen2_5_VLForConditionalGeneration"
    stream_writers = ("model.visual.merger.mlp.2",)
    checkpoint_prefixes = (("model.visual", "visual"), ("model.language_model", "model"))
