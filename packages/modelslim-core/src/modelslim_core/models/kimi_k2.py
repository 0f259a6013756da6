"""Kimi-K2 (Instruct, Instruct-0905, Thinking): DeepSeek-V3's architecture with 384 routed experts and one dense
first layer. Releases ship FP8 128x128 blocks (K2-Instruct) or INT4 pack-quantized experts (K2-Thinking), read
as float tensor by tensor (io/source_dequant.py). Their config.json names `kimi_k2` with remote code; a
checkpoint converted to transformers' `deepseek_v3` loads without it.
"""

from __future__ import annotations

from modelslim_core.models.deepseek_v3 import DeepseekV3Adapter


class KimiK2Adapter(DeepseekV3Adapter):
    family = "kimi_k2"
    model_types = ("Kimi-K2-Instruct", "Kimi-K2-Instruct-0905", "Kimi-K2-Thinking")
    model_type_prefixes = ("Kimi-K2-",)
    hf_model_types = ("deepseek_v3", "kimi_k2")
