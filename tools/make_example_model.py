"""Build the tiny example model in `examples/qwen2-tiny/`, fully offline and deterministically.

Tests and docs need a real Hugging Face checkpoint (config, safetensors weights, tokenizer files) that
loads with `from_pretrained` like any Qwen2 model, yet is a few MB, free of third-party weights and
reproducible without network access. This script makes one: a byte-level BPE tokenizer trained on the
repository's own calibration texts, and a randomly initialised four-layer `Qwen2ForCausalLM` saved in
bfloat16. The same seed gives byte-identical files on every run.

Usage (from the repository root):
    .venv/bin/python tools/make_example_model.py [--out examples/qwen2-tiny] [--seed 0]
"""

from __future__ import annotations

import argparse
import json
from collections.abc import Iterator
from pathlib import Path

import torch
from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

REPO_ROOT = Path(__file__).resolve().parent.parent
CORPUS_FILES = (REPO_ROOT / "calib" / "mix_calib.jsonl", REPO_ROOT / "calib" / "heldout_eval.jsonl")
EOS_TOKEN = "<|endoftext|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")
VOCAB_SIZE = 2048
MAX_POSITIONS = 1024


def corpus_texts() -> Iterator[str]:
    """The calibration and held-out texts, in file order, so training sees the same stream every run."""
    for path in CORPUS_FILES:
        with path.open(encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)["inputs_pretokenized"]


def train_tokenizer() -> Tokenizer:
    """A byte-level BPE, so every string (Chinese included) encodes without an unknown token.

    The normalizer and pre-tokenizer are exactly those `Qwen2Tokenizer` installs: `AutoTokenizer` picks that
    class from the model's `model_type` and rebuilds the pipeline around the saved vocabulary and merges,
    so training with anything else would make the loaded tokenizer split text differently.
    """
    tokenizer = Tokenizer(models.BPE())
    tokenizer.normalizer = normalizers.NFC()
    tokenizer.pre_tokenizer = pre_tokenizers.Sequence(
        [
            pre_tokenizers.Split(Regex(PRETOKENIZE_REGEX), behavior="isolated", invert=False),
            pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False),
        ]
    )
    tokenizer.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=VOCAB_SIZE,
        special_tokens=[EOS_TOKEN, *CHAT_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(corpus_texts(), trainer=trainer)
    return tokenizer


def wrap_tokenizer(tokenizer: Tokenizer) -> PreTrainedTokenizerFast:
    """Qwen2-style special tokens: `<|endoftext|>` ends and pads, there is no BOS."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        bos_token=None,
        unk_token=None,
        extra_special_tokens=list(CHAT_TOKENS),
        model_max_length=MAX_POSITIONS,
        clean_up_tokenization_spaces=False,
    )


def build_model(vocab_size: int, eos_id: int, seed: int) -> Qwen2ForCausalLM:
    """Random weights from a fixed seed: the model only has to be structurally real, not useful."""
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=128,
        intermediate_size=352,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=False,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        dtype="bfloat16",
    )
    torch.manual_seed(seed)
    model = Qwen2ForCausalLM(config).to(torch.bfloat16)
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=eos_id)
    return model


def build(out: Path, seed: int) -> None:
    """Write tokenizer and model files into `out`."""
    out.mkdir(parents=True, exist_ok=True)
    tokenizer = wrap_tokenizer(train_tokenizer())
    tokenizer.save_pretrained(out)
    model = build_model(len(tokenizer), tokenizer.eos_token_id, seed)
    model.save_pretrained(out, safe_serialization=True)


def _require(condition: bool, message: str) -> None:
    """Fail loudly; unlike `assert`, this still checks under `python -O`."""
    if not condition:
        raise RuntimeError(f"verification failed: {message}")


def verify(out: Path) -> None:
    """Reload from disk the way users will, so a broken save fails here rather than in a test later."""
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32).eval()
    for text in ("The quick brown fox jumps over the lazy dog.", "量化可以减少模型的显存占用。"):
        ids = tokenizer(text)["input_ids"]
        _require(tokenizer.decode(ids) == text, f"round trip failed for {text!r}")
        print(f"round trip ok: {len(ids):3d} tokens  {text}")
    sample = next(corpus_texts())
    trained = Tokenizer.from_file(str(out / "tokenizer.json")).encode(sample).ids
    _require(tokenizer(sample)["input_ids"] == trained, "the loaded tokenizer splits text unlike the trained one")
    inputs = tokenizer(sample, return_tensors="pt", truncation=True)
    with torch.no_grad():
        logits = model(**inputs).logits
    _require(bool(torch.isfinite(logits).all()), "forward pass produced non-finite logits")
    params = sum(p.numel() for p in model.parameters())
    print(f"forward ok: logits {tuple(logits.shape)}, finite; {params:,} parameters; vocab {len(tokenizer)}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--out",
        type=Path,
        default=Path("examples/qwen2-tiny"),
        help="output directory, relative to the repository root unless absolute",
    )
    parser.add_argument("--seed", type=int, default=0, help="torch seed for the random weights")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    out = args.out if args.out.is_absolute() else REPO_ROOT / args.out
    build(out, args.seed)
    verify(out)
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
