"""Tiny multimodal checkpoints of today's VLM families, from transformers' config classes (never downloaded),
with working processors built from their settings (tests/vlm/tiny_vlm.py has the shared tokenizer/template)."""

from __future__ import annotations

from pathlib import Path

import torch

from tests.vlm.tiny_vlm import TEXT, VL_SPECIAL, _qwen3_vl_processor, _save, _vl_ids, make_tokenizer

#: Qwen3.5 hybrid text model: layers 0-2 linear attention (Gated DeltaNet), layer 3 full attention.
QWEN3_5_TEXT = {**TEXT, "num_hidden_layers": 4, "head_dim": 16, "linear_key_head_dim": 16, "linear_value_head_dim": 16,
                "linear_num_key_heads": 2, "linear_num_value_heads": 4,
                "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0, "mrope_section": [2, 3, 3],
                                    "mrope_interleaved": True, "partial_rotary_factor": 1.0}}
QWEN3_5_VISION = dict(depth=2, hidden_size=32, intermediate_size=64, num_heads=2, out_hidden_size=64, patch_size=16,
                      spatial_merge_size=2, temporal_patch_size=2, num_position_embeddings=64)


def make_qwen3_5(target: Path, moe: bool = False, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    from transformers import (Qwen3_5Config, Qwen3_5ForConditionalGeneration, Qwen3_5MoeConfig,
                              Qwen3_5MoeForConditionalGeneration)

    tokenizer = make_tokenizer(VL_SPECIAL)
    text = dict(QWEN3_5_TEXT)
    if moe:
        text.update(num_experts=4, num_experts_per_tok=2, moe_intermediate_size=32, shared_expert_intermediate_size=32)
        config = Qwen3_5MoeConfig(text_config=text, vision_config=QWEN3_5_VISION, **_vl_ids(tokenizer))
    else:
        config = Qwen3_5Config(text_config=text, vision_config=QWEN3_5_VISION, **_vl_ids(tokenizer))
    torch.manual_seed(seed)
    model = (Qwen3_5MoeForConditionalGeneration if moe else Qwen3_5ForConditionalGeneration)(config)
    return _save(model, _qwen3_vl_processor(tokenizer), target, dtype, seed)


def add_tensors(weights: Path, tensors: dict[str, torch.Tensor]) -> None:
    """Append tensors transformers does not build (a release's MTP layers) to a saved checkpoint file."""
    from safetensors.torch import load_file, save_file

    saved = load_file(weights)
    saved.update(tensors)
    save_file(saved, weights, metadata={"format": "pt"})
