"""Tiny random-weight checkpoints built from transformers config objects, with the example tokenizer.

Tests never download anything: models come from configs, the tokenizer from the repository's example.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import (AutoModelForCausalLM, DeepseekV3Config, DeepseekV32Config, LlamaConfig, MiniMaxM2Config, MistralConfig,
                          Qwen2Config, Qwen3Config, Qwen3MoeConfig)

REPO = Path(__file__).resolve().parents[1]
EXAMPLE_MODEL = REPO / "examples" / "qwen2-demo"
TOKENIZER_FILES = ("tokenizer.json", "tokenizer_config.json", "special_tokens_map.json")

_COMMON = dict(
    hidden_size=64,
    intermediate_size=128,
    num_hidden_layers=2,
    num_attention_heads=4,
    num_key_value_heads=2,
    max_position_embeddings=512,
    tie_word_embeddings=False,
)

CONFIGS = {
    "qwen2": lambda vocab, **kw: Qwen2Config(vocab_size=vocab, **{**_COMMON, **kw}),
    "qwen3": lambda vocab, **kw: Qwen3Config(vocab_size=vocab, head_dim=16, **{**_COMMON, **kw}),
    "llama": lambda vocab, **kw: LlamaConfig(vocab_size=vocab, **{**_COMMON, **kw}),
    "mistral": lambda vocab, **kw: MistralConfig(vocab_size=vocab, head_dim=16, **{**_COMMON, **kw}),  # no family adapter
    # MoE: 4 routed experts, 2 per token; intermediate sizes divisible by 16 (W4A8 down_proj scale_bias chunks).
    "qwen3_moe": lambda vocab, **kw: Qwen3MoeConfig(
        vocab_size=vocab, head_dim=16, moe_intermediate_size=32, num_experts=4, num_experts_per_tok=2,
        norm_topk_prob=True, **{**_COMMON, **kw}),
    # Checkpoint names differ from module paths: transformers loads `block_sparse_moe.experts.E.w1/w2/w3` as
    # `mlp.experts.gate_up_proj/down_proj` and saves them back under the checkpoint's names.
    "minimax_m2": lambda vocab, **kw: MiniMaxM2Config(
        vocab_size=vocab, head_dim=16, rotary_dim=8, num_local_experts=4, num_experts_per_tok=2,
        **{**_COMMON, "intermediate_size": 32, **kw}),
    # MLA attention (q/kv low-rank), layer 0 dense (first_k_dense_replace=1), layers 1-2 shared + routed experts.
    "deepseek_v3": lambda vocab, **kw: DeepseekV3Config(
        vocab_size=vocab, **{**_COMMON, "num_key_value_heads": 4, "num_hidden_layers": 3, **{
            "moe_intermediate_size": 32, "n_routed_experts": 4, "num_experts_per_tok": 2, "n_shared_experts": 1,
            "n_group": 2, "topk_group": 1, "first_k_dense_replace": 1, "q_lora_rank": 32, "kv_lora_rank": 32,
            "qk_rope_head_dim": 8, "qk_nope_head_dim": 16, "v_head_dim": 16, "rope_interleave": True, **kw}}),
}
# DeepSeek-V3.2: the V3 geometry plus the lightning indexer (its own small q/k projections); index_topk is
# above the test sequence lengths, so the sparse selection keeps every token and logits stay comparable.
_DEEPSEEK = CONFIGS["deepseek_v3"]
CONFIGS["deepseek_v32"] = lambda vocab, **kw: DeepseekV32Config(
    **{**_DEEPSEEK(vocab).to_dict(), "index_topk": 64, "index_head_dim": 16, "index_n_heads": 2, **kw})


def copy_tokenizer(target: Path) -> int:
    """Copy the example tokenizer files; returns the vocabulary size."""
    from transformers import AutoTokenizer

    for name in TOKENIZER_FILES:
        if (EXAMPLE_MODEL / name).is_file():
            shutil.copyfile(EXAMPLE_MODEL / name, target / name)
    return len(AutoTokenizer.from_pretrained(target, local_files_only=True))


def make_tiny_model(target: Path, arch: str = "qwen2", dtype: torch.dtype = torch.bfloat16, seed: int = 0,
                    **overrides) -> Path:
    """Write a tiny `arch` checkpoint in `dtype` with the example tokenizer to `target` (config overrides allowed)."""
    target.mkdir(parents=True, exist_ok=True)
    vocab = copy_tokenizer(target)
    config = CONFIGS[arch](vocab, **overrides)
    torch.manual_seed(seed)
    model = AutoModelForCausalLM.from_config(config, dtype=torch.float32)
    with torch.no_grad():  # random biases so bias handling is exercised (Qwen2 q/k/v carry biases)
        for name, param in model.named_parameters():
            if name.endswith(".bias"):
                param.normal_(0, 0.02)
        for name, buffer in model.named_buffers():  # DeepSeek's routing bias is stored in checkpoints
            if name.endswith("e_score_correction_bias"):
                buffer.normal_(0, 0.1)
    model.to(dtype).save_pretrained(target, safe_serialization=True)
    return target


#: A tiny WordPiece vocabulary: special tokens, letters, digits, punctuation and a few word pieces.
ENCODER_VOCAB = (["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"] + list("abcdefghijklmnopqrstuvwxyz0123456789.,:;!?'\"()-*+=/")
                 + ["the", "quick", "brown", "fox", "every", "token", "##s", "##ing", "##ed", "##er"]
                 + [f"##{c}" for c in "abcdefghijklmnopqrstuvwxyz0123456789"])


def make_tiny_encoder(target: Path, dtype: torch.dtype = torch.float32, seed: int = 0) -> Path:
    """A tiny random BERT encoder (BertModel, no LM head) with a WordPiece tokenizer built offline from a vocab list."""
    from transformers import BertConfig, BertModel, BertTokenizer

    target.mkdir(parents=True, exist_ok=True)
    vocab_file = target / "vocab.txt"
    vocab_file.write_text("\n".join(ENCODER_VOCAB) + "\n", encoding="utf-8")
    BertTokenizer(vocab_file=str(vocab_file), do_lower_case=True).save_pretrained(target)
    config = BertConfig(vocab_size=len(ENCODER_VOCAB), hidden_size=64, num_hidden_layers=2, num_attention_heads=4,
                        intermediate_size=128, max_position_embeddings=128)
    torch.manual_seed(seed)
    BertModel(config).to(dtype).save_pretrained(target, safe_serialization=True)
    return target
