"""Which text `msmodelslim eval` reads by default, and when its perplexity says nothing about the model.

Perplexity only means something on text the model can read. The demo LM learned Python's standard library
with a 4,096-token vocabulary: on general web text its float perplexity is ~36,000, worse than guessing
uniformly, and a quantized/float ratio measured there tells nothing. So a model the repository ships gets
its own held-out set by default (recognised by its tokenizer, which is what decides what text it can read),
other models get the general `heldout_eval.jsonl`, and a float perplexity above a fraction of the vocabulary
size is flagged as out of domain.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from torch import nn

GENERAL_HELDOUT = "heldout_eval.jsonl"

#: sha256 of a shipped model's tokenizer.json -> its own held-out set in calib/ (the demo LM: examples/qwen2-demo).
OWN_HELDOUT_BY_TOKENIZER = {
    "7439eae252078173f9e6d2a13d3795bc98ab4ceb6a284bf3e1a28d6e9c81f803": "demo_heldout.jsonl",
}

#: A float perplexity above this fraction of the vocabulary size means the text is out of domain for the model
#: (a uniform guess scores the whole vocabulary size; a model reading its own kind of text scores far below).
OUT_OF_DOMAIN_FRACTION = 0.1


def default_dataset(model_path: Path) -> str:
    tokenizer = Path(model_path) / "tokenizer.json"
    if tokenizer.is_file():
        digest = hashlib.sha256(tokenizer.read_bytes()).hexdigest()
        if digest in OWN_HELDOUT_BY_TOKENIZER:
            return OWN_HELDOUT_BY_TOKENIZER[digest]
    return GENERAL_HELDOUT


def vocabulary_size(model: nn.Module) -> int | None:
    config = getattr(model, "config", None)
    size = getattr(config, "vocab_size", None) or getattr(getattr(config, "text_config", None), "vocab_size", None)
    return int(size) if size else None


def out_of_domain(float_perplexity: float, model: nn.Module) -> bool:
    size = vocabulary_size(model)
    return size is not None and float_perplexity > OUT_OF_DOMAIN_FRACTION * size


def out_of_domain_note(report: dict) -> str:
    return (f"note: this text is out of domain for the model (float perplexity {report['float']:.1f} is above "
            f"{OUT_OF_DOMAIN_FRACTION:g} x its vocabulary size), so these figures say little about the "
            "quantization; evaluate on text like the model's training data (--dataset).")
