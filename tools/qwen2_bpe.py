"""Byte-level BPE tokenizers that load back unchanged as `Qwen2Tokenizer`, shared by the example-model tools.

`AutoTokenizer` picks `Qwen2Tokenizer` from a checkpoint's `model_type: qwen2` and rebuilds the normalizer
and pre-tokenizer around the saved vocabulary and merges. A tokenizer trained with any other pipeline would
therefore split text differently once reloaded, so every example model trains with exactly Qwen2's.
"""

from __future__ import annotations

from collections.abc import Iterable

from tokenizers import Regex, Tokenizer, decoders, models, normalizers, pre_tokenizers, trainers
from transformers import PreTrainedTokenizerFast
from transformers.models.qwen2.tokenization_qwen2 import PRETOKENIZE_REGEX

EOS_TOKEN = "<|endoftext|>"
CHAT_TOKENS = ("<|im_start|>", "<|im_end|>")


def train_byte_level_bpe(texts: Iterable[str], vocab_size: int) -> Tokenizer:
    """A byte-level BPE, so every string (Chinese included) encodes without an unknown token.

    The normalizer (NFC) and pre-tokenizer (Qwen2's split regex, then bytes to symbols) are exactly those
    `Qwen2Tokenizer` installs. The special tokens come first, so they get ids 0, 1 and 2.
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
        vocab_size=vocab_size,
        special_tokens=[EOS_TOKEN, *CHAT_TOKENS],
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(),
        show_progress=False,
    )
    tokenizer.train_from_iterator(texts, trainer=trainer)
    return tokenizer


def wrap_tokenizer(tokenizer: Tokenizer, model_max_length: int) -> PreTrainedTokenizerFast:
    """Qwen2-style special tokens: `<|endoftext|>` ends and pads, there is no BOS."""
    return PreTrainedTokenizerFast(
        tokenizer_object=tokenizer,
        eos_token=EOS_TOKEN,
        pad_token=EOS_TOKEN,
        bos_token=None,
        unk_token=None,
        extra_special_tokens=list(CHAT_TOKENS),
        model_max_length=model_max_length,
        clean_up_tokenization_spaces=False,
    )


def require(condition: bool, message: str) -> None:
    """Fail loudly; unlike `assert`, this still checks under `python -O`."""
    if not condition:
        raise RuntimeError(f"verification failed: {message}")
