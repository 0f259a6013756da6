"""Llama dense models (Llama 2, 3, 3.1, 3.2, 3.3)."""

from modelslim_core.models.base import ModelAdapter


class LlamaAdapter(ModelAdapter):
    family = "llama"
    model_types = (
        "Llama-2-7b-hf",
        "Llama-3-8B",
        "Llama-3-8B-Instruct",
        "Llama-3.1-8B",
        "Llama-3.1-8B-Instruct",
        "Llama-3.1-70B-Instruct",
        "Llama-3.2-1B-Instruct",
        "Llama-3.2-3B-Instruct",
        "Llama-3.3-70B-Instruct",
    )
    model_type_prefixes = ("Llama-", "Meta-Llama-")
    hf_model_types = ("llama",)
