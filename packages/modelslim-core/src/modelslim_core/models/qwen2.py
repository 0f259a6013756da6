"""Qwen2 and Qwen2.5 dense models, and the releases built on the same architecture (config.json `qwen2`):
Qwen1.5, QwQ-32B (Qwen2 practices) and the DeepSeek-R1 distillations of Qwen2.5."""

from modelslim_core.models.base import ModelAdapter


class Qwen2Adapter(ModelAdapter):
    family = "qwen2"
    model_types = ("Qwen2-7B", "Qwen2-7B-Instruct", "Qwen2-72B", "Qwen2-72B-Instruct", "QwQ-32B", "Qwen-QwQ-32B",
                   "Qwen1.5-110B")
    model_type_prefixes = ("Qwen2-", "Qwen1.5-", "QwQ-", "Qwen-QwQ-")
    hf_model_types = ("qwen2",)


class Qwen2_5Adapter(ModelAdapter):
    family = "qwen2_5"
    model_types = (
        "Qwen2.5-7B-Instruct",
        "Qwen2.5-32B-Instruct",
        "Qwen2.5-72B-Instruct",
        "Qwen2.5-Coder-7B-Instruct",
        "DeepSeek-R1-Distill-Qwen-1.5B",
        "DeepSeek-R1-Distill-Qwen-7B",
        "DeepSeek-R1-Distill-Qwen-14B",
        "DeepSeek-R1-Distill-Qwen-32B",
    )
    model_type_prefixes = ("Qwen2.5-", "DeepSeek-R1-Distill-Qwen-")
    hf_model_types = ("qwen2",)
