"""Tiny checkpoints of today's families, built from transformers' own config classes (never downloaded)."""

from __future__ import annotations

from pathlib import Path

import torch
from transformers import AutoModelForCausalLM

from tests.tiny_models import copy_tokenizer

#: MLA geometry shared by the DeepSeek-style families (LongCat-Flash, GLM-5, Kimi-K2).
MLA = dict(q_lora_rank=32, kv_lora_rank=32, qk_nope_head_dim=16, qk_rope_head_dim=8, v_head_dim=16)
COMMON = dict(hidden_size=64, num_attention_heads=4, max_position_embeddings=512, tie_word_embeddings=False)


def family_configs(vocab: int) -> dict:
    """model_type -> a tiny config of that family (2-3 layers, 4 routed experts where MoE)."""
    from transformers import (DeepseekV4Config, Glm4MoeConfig, Glm4MoeLiteConfig, GlmMoeDsaConfig, LongcatFlashConfig,
                              MiniMaxM2Config, Qwen3NextConfig)

    moe = dict(n_routed_experts=4, num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
               moe_intermediate_size=32, intermediate_size=128)

    return {
        "longcat_flash": LongcatFlashConfig(vocab_size=vocab, num_layers=2, ffn_hidden_size=128, moe_topk=2,
                                            n_routed_experts=4, zero_expert_num=2, expert_ffn_hidden_size=32,
                                            head_dim=8, **MLA, **COMMON),
        "glm4_moe": Glm4MoeConfig(vocab_size=vocab, num_hidden_layers=3, num_key_value_heads=2, head_dim=16,
                                  intermediate_size=128, moe_intermediate_size=32, n_routed_experts=4,
                                  num_experts_per_tok=2, n_shared_experts=1, n_group=1, topk_group=1,
                                  first_k_dense_replace=1, **COMMON),
        "glm4_moe_lite": Glm4MoeLiteConfig(vocab_size=vocab, num_hidden_layers=2, num_key_value_heads=4,
                                           mlp_layer_types=["dense", "sparse"], **moe, **MLA, **COMMON),
        "glm_moe_dsa": GlmMoeDsaConfig(vocab_size=vocab, num_hidden_layers=2, num_key_value_heads=4, head_dim=8,
                                       first_k_dense_replace=1, index_topk=64, index_head_dim=16, index_n_heads=2,
                                       **moe, **MLA, **COMMON),
        "minimax_m2": MiniMaxM2Config(vocab_size=vocab, num_hidden_layers=2, num_key_value_heads=2, head_dim=16,
                                      intermediate_size=32, num_local_experts=4, num_experts_per_tok=2,
                                      bos_token_id=None, eos_token_id=None, **COMMON),
        # hybrid: layers 0-2 linear attention (Gated DeltaNet), layer 3 full attention; every layer MoE
        "qwen3_next": Qwen3NextConfig(vocab_size=vocab, num_hidden_layers=4, num_key_value_heads=2, head_dim=16,
                                      intermediate_size=128, linear_key_head_dim=16, linear_value_head_dim=16,
                                      linear_num_key_heads=2, linear_num_value_heads=4, moe_intermediate_size=32,
                                      shared_expert_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
                                      **COMMON),
        # hash-routed first layer, then top-k MoE; sliding, compressed-sparse and heavily-compressed attention
        "deepseek_v4": DeepseekV4Config(vocab_size=vocab, num_hidden_layers=4, num_key_value_heads=1, head_dim=32,
                                        q_lora_rank=32, moe_intermediate_size=32, n_routed_experts=4,
                                        num_experts_per_tok=2, n_shared_experts=1, hc_mult=2, hc_sinkhorn_iters=3,
                                        sliding_window=16, o_groups=2, o_lora_rank=16, index_n_heads=2,
                                        index_head_dim=16, index_topk=8, partial_rotary_factor=0.25,
                                        compress_rates={"compressed_sparse_attention": 4,
                                                        "heavily_compressed_attention": 8},
                                        mlp_layer_types=["hash_moe", "moe", "moe", "moe"],
                                        layer_types=["sliding_attention", "compressed_sparse_attention",
                                                     "heavily_compressed_attention", "compressed_sparse_attention"],
                                        **COMMON),
    }


def make_family_model(target: Path, model_type: str, dtype: torch.dtype = torch.bfloat16, seed: int = 0) -> Path:
    """Write a tiny random `model_type` checkpoint (checkpoint names as transformers saves them) to `target`."""
    target.mkdir(parents=True, exist_ok=True)
    vocab = copy_tokenizer(target)
    config = family_configs(vocab)[model_type]
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():
        for name, buffer in model.named_buffers():  # routing biases are stored in checkpoints
            if name.endswith("e_score_correction_bias"):
                buffer.normal_(0, 0.1)
    model.to(dtype).save_pretrained(target, safe_serialization=True)
    if model_type in RELEASE_LAYOUTS:
        _rename_tensors(target / "model.safetensors", RELEASE_LAYOUTS[model_type])
    return target


def _deepseek_v4_release_name(name: str) -> str:
    """DeepSeek-V4 releases store the base model unprefixed: `embed.weight`, `layers.*`, `norm.weight`, `hc_head_*`."""
    name = name.removeprefix("model.")
    for ours, release in (("embed_tokens.", "embed."), ("hc_head.hc_", "hc_head_")):
        if name.startswith(ours):
            return release + name[len(ours):]
    return name


#: model_type -> how its releases name what save_pretrained writes (where they differ).
RELEASE_LAYOUTS = {"deepseek_v4": _deepseek_v4_release_name}


def _rename_tensors(weights: Path, rename) -> None:
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    save_file({rename(name): tensor for name, tensor in tensors.items()}, weights, metadata={"format": "pt"})


REMOTE_CODE = Path(__file__).parent / "remote_code"


def make_step3p5(target: Path, dtype: torch.dtype = torch.bfloat16, seed: int = 0, with_code: bool = True) -> Path:
    """A tiny Step-3.5-Flash release: config.json model_type `step3p5` with `auto_map` to the modeling file it
    ships (a stand-in built on transformers' own Step-3.5 decoder stack), a dense first layer then MoE layers,
    sliding and full attention, and one MTP layer after the last decoder layer (`model.layers.3.*`)."""
    import json
    import shutil

    from transformers import AutoConfig
    from transformers.dynamic_module_utils import get_class_from_dynamic_module

    target.mkdir(parents=True, exist_ok=True)
    vocab = copy_tokenizer(target)
    shutil.copy(REMOTE_CODE / "modeling_step3p5.py", target / "modeling_step3p5.py")
    config = AutoConfig.for_model(
        "step3p5", vocab_size=vocab, hidden_size=64, intermediate_size=128, num_hidden_layers=3, num_attention_heads=4,
        num_key_value_heads=2, head_dim=16, max_position_embeddings=512, moe_intermediate_size=32, n_routed_experts=4,
        num_experts_per_tok=2, share_expert_dim=32, sliding_window=8, pad_token_id=0, num_nextn_predict_layers=1,
        mlp_layer_types=["dense", "sparse", "sparse"],
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        architectures=["Step3p5ForCausalLM"], auto_map={"AutoModelForCausalLM": "modeling_step3p5.Step3p5ForCausalLM"})
    config.save_pretrained(target)
    model_class = get_class_from_dynamic_module("modeling_step3p5.Step3p5ForCausalLM", str(target))
    torch.manual_seed(seed)
    model = model_class(config).to(torch.float32)
    with torch.no_grad():
        for name, param in model.named_parameters():
            if name.endswith("e_score_correction_bias"):
                param.normal_(0, 0.1)
    model.to(dtype).save_pretrained(target, safe_serialization=True)
    _add_mtp_layer(target / "model.safetensors", 3, 64, dtype)
    if not with_code:
        (target / "modeling_step3p5.py").unlink()
        data = json.loads((target / "config.json").read_text())
        data.pop("auto_map", None)
        (target / "config.json").write_text(json.dumps(data, indent=2))
    return target


def _add_mtp_layer(weights: Path, index: int, hidden: int, dtype: torch.dtype) -> None:
    """One MTP layer after the last decoder layer, as Step-3.5 releases keep them (`model.layers.<n>.*`)."""
    from safetensors.torch import load_file, save_file

    tensors = load_file(weights)
    prefix = f"model.layers.{index}"
    tensors.update({f"{prefix}.enorm.weight": torch.ones(hidden, dtype=dtype),
                    f"{prefix}.eh_proj.weight": torch.randn(hidden, 2 * hidden).to(dtype),
                    f"{prefix}.self_attn.q_proj.weight": torch.randn(hidden, hidden).to(dtype)})
    save_file(tensors, weights, metadata={"format": "pt"})
