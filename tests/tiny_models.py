"""Tiny random-weight checkpoints built from transformers config objects, with the example tokenizer.

Tests never download anything: models come from configs, the tokenizer from the repository's example.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import torch
from transformers import AutoModelForCausalLM, LlamaConfig, Qwen2Config, Qwen3Config

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
}


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
    model.to(dtype).save_pretrained(target, safe_serialization=True)
    return target
