"""--model_type -> model adapter: exact names, family prefixes, config.json architecture, default."""

import pytest

from modelslim_core.models.resolve import adapter_class_for


@pytest.mark.parametrize(
    "model_type, hf_type, family",
    [
        ("Qwen2.5-7B-Instruct", "qwen2", "qwen2_5"),
        ("Qwen2.5-0.5B-Instruct", "qwen2", "qwen2_5"),  # family prefix
        ("DeepSeek-R1-Distill-Qwen-7B", "qwen2", "qwen2_5"),  # reaches its practices (the reference's orphan)
        ("Qwen2-7B", "qwen2", "qwen2"),
        ("Qwen3-8B", "qwen3", "qwen3"),
        ("Llama-3.1-8B-Instruct", "llama", "llama"),
        ("my-finetune", "llama", "llama"),  # unknown name, known architecture
        ("Qwen3-30B-A3B", "qwen3_moe", "default"),  # prefix matches but the architecture is not dense Qwen3
        ("SomethingElse", "gpt2", "default"),
    ],
)
def test_adapter_choice(model_type, hf_type, family):
    cls, reason = adapter_class_for(model_type, hf_type)
    assert cls.family == family
    assert reason
