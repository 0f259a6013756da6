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
        ("Qwen3-30B-A3B", "qwen3_moe", "qwen3_moe"),  # the dense Qwen3 prefix matches, but not the architecture
        ("Qwen3-Coder-480B-A35B", "qwen3_moe", "qwen3_moe"),
        ("Qwen3-8B", "qwen3_moe", "qwen3_moe"),  # a mislabelled MoE checkpoint still gets the MoE adapter
        ("DeepSeek-V3", "deepseek_v3", "deepseek_v3"),
        ("DeepSeek-R1-0528", "deepseek_v3", "deepseek_v3"),
        ("DeepSeek-V3.1-Terminus", "deepseek_v3", "deepseek_v3"),
        ("DeepSeek-V3.2-Exp", "deepseek_v32", "deepseek_v3_2"),
        ("my-moe-finetune", "deepseek_v3", "deepseek_v3"),
        ("SomethingElse", "gpt2", "default"),
    ],
)
def test_adapter_choice(model_type, hf_type, family):
    cls, reason = adapter_class_for(model_type, hf_type)
    assert cls.family == family
    assert reason
