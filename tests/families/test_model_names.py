"""Reference model names of today's families resolve to their family's adapter and to a practice verified for
them (lookup level 1 with --quant_type, never the `default` pedigree)."""

from __future__ import annotations

import pytest

from modelslim_core.models.resolve import adapter_class_for
from modelslim_core.practice import PracticeLibrary, select_practice
from tests.tiny_models import REPO

#: (user-facing name, config.json model_type of its release, family, quant types the family's practices offer)
NAMES = [
    ("GLM-4.5", "glm4_moe", "glm4_moe", ["w8a8"]),
    ("GLM-4.6", "glm4_moe", "glm4_moe", ["w8a8"]),
    ("GLM-4.7", "glm4_moe", "glm4_moe", ["w8a8"]),
    ("GLM-4.7-Flash", "glm4_moe_lite", "glm4_moe_lite", ["w8a8"]),
    ("GLM-5", "glm_moe_dsa", "glm_5", ["w8a8", "w4a8"]),
    ("GLM-5.1", "glm_moe_dsa", "glm_5", ["w8a8", "w4a8"]),
    ("Kimi-K2-Instruct-0905", "kimi_k2", "kimi_k2", ["w8a8"]),
    ("Kimi-K2-Thinking", "deepseek_v3", "kimi_k2", ["w8a8"]),
    ("Kimi-K2.5", "kimi_k25", "kimi_k25", ["w8a8", "w4a8"]),
    ("Kimi-K2.6", "kimi_k25", "kimi_k25", ["w8a8", "w4a8"]),
    ("Step-3.5-Flash", "step3p5", "step3p5", ["w8a8"]),
    ("MiniMax-M2.7", "minimax_m2", "minimax_m2", ["w8a8"]),
    ("MiniMax-M2.5", "minimax_m2", "minimax_m2", ["w8a8"]),
    ("Qwen3-Next-80B-A3B-Instruct", "qwen3_next", "qwen3_next", ["w8a8"]),
    ("LongCat-Flash-Chat", "longcat_flash", "longcat_flash", ["w8a8"]),
    ("DeepSeek-V4-Flash", "deepseek_v4", "deepseek_v4", ["w8a8"]),
    ("DeepSeek-V4-Pro", "deepseek_v4", "deepseek_v4", ["w8a8", "w4a8"]),
    ("Qwen3.5-27B", "qwen3_5", "qwen3_5", ["w8a8"]),
    ("Qwen3.6-27B", "qwen3_5", "qwen3_5", ["w8a8"]),
    ("Qwen3.5-35B-A3B", "qwen3_5_moe", "qwen3_5_moe", ["w8a8"]),
    ("Qwen3.5-122B-A10B", "qwen3_5_moe", "qwen3_5_moe", ["w8a8"]),
    ("Qwen3.5-397B-A17B", "qwen3_5_moe", "qwen3_5_moe", ["w8a8", "w4a8"]),
    ("GLM-4.6V", "glm4v_moe", "glm46v", ["w8a8"]),
    ("InternVL3_5-38B", "internvl", "internvl", ["w8a8"]),
    ("InternVL3_5-241B-A28B", "internvl", "internvl", ["w8a8"]),
    ("Qwen3-Omni-30B-A3B-Instruct", "qwen3_omni_moe", "qwen3_omni_moe", ["w8a8"]),
    ("Qwen3-Omni-30B-A3B-Thinking", "qwen3_omni_moe", "qwen3_omni_moe", ["w8a8"]),
    ("DeepSeek-R1-Distill-Qwen-1.5B", "qwen2", "qwen2_5", ["w8a8"]),
    ("DeepSeek-R1-Distill-Qwen-32B", "qwen2", "qwen2_5", ["w8a8"]),
    ("QwQ-32B", "qwen2", "qwen2", ["w8a8", "w8a8s"]),
    ("Qwen-QwQ-32B", "qwen2", "qwen2", ["w8a8", "w8a8s"]),
    ("Qwen1.5-110B", "qwen2", "qwen2", ["w8a8", "w8a16"]),
    ("Qwen1.5-7B-Chat", "qwen2", "qwen2", ["w8a8"]),
]


@pytest.mark.parametrize(("name", "hf_model_type", "family", "quant_types"), NAMES)
def test_reference_name_resolves_to_its_family_and_a_verified_practice(name, hf_model_type, family, quant_types):
    cls, _ = adapter_class_for(name, hf_model_type)
    assert cls.family == family
    library = PracticeLibrary([REPO / "practices"])
    for quant_type in quant_types:
        selection = select_practice(library, cls.family, name, quant_type, None)
        assert selection.level == 1 and selection.tip is None, (name, quant_type, selection.level)
        assert name in selection.practice.metadata.verified_model_types
    assert select_practice(library, cls.family, name, None, None).level in (1, 2)  # no --quant_type: w8a8, prompted


def test_shared_architecture_falls_back_to_its_own_family():
    """An unlisted name with DeepSeek-V3's config.json goes to the deepseek_v3 adapter, not Kimi-K2's."""
    assert adapter_class_for("my-finetune", "deepseek_v3")[0].family == "deepseek_v3"


def test_w8a8_selects_the_int8_practice_over_mxfp8():
    """MiniMax-M2 ships an MXFP8 W8A8 practice beside the int8 one; `--quant_type w8a8` means int8."""
    library = PracticeLibrary([REPO / "practices"])
    selection = select_practice(library, "minimax_m2", "MiniMax-M2.7", "w8a8", None)
    assert selection.practice.metadata.config_id == "minimax_m2-w8a8"
