"""Qwen3 dense models."""

from modelslim_core.models.base import ModelAdapter


class Qwen3Adapter(ModelAdapter):
    family = "qwen3"
    model_types = ("Qwen3-0.6B", "Qwen3-1.7B", "Qwen3-4B", "Qwen3-8B", "Qwen3-14B", "Qwen3-32B")
    model_type_prefixes = ("Qwen3-",)
    hf_model_types = ("qwen3",)
