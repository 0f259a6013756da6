"""Train the demo model in `examples/qwen2-demo/`: a tiny Qwen2 language model that has really learned something.

Quantization accuracy is only measurable on a model whose predictions mean something: a randomly
initialised model scores a perplexity near its vocabulary size whatever the quantizer does to it. This
tool trains a few-million-parameter `Qwen2ForCausalLM` on a corpus every machine has, offline and free of
third-party data: the Python standard library's own source files (code, comments and docstrings).

Files are split into training and held-out sets by a hash of their path. Held-out files never reach the
tokenizer or the model; 48 excerpts of them become `calib/demo_heldout.jsonl`, the text to measure
perplexity on before and after quantization.

Everything is deterministic: the same seed, Python version (its standard library is the corpus), library
versions and thread count give byte-identical files.

Usage (from the repository root):
    .venv/bin/python tools/train_demo_lm.py [--out examples/qwen2-demo] [--steps 650] [--seed 0]
        [--heldout-out calib/demo_heldout.jsonl]
"""

from __future__ import annotations

import argparse
import hashlib
import json
import math
import sysconfig
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import torch
from modelslim.app.evaluate import perplexity
from qwen2_bpe import EOS_TOKEN, require, train_byte_level_bpe, wrap_tokenizer
from tokenizers import Tokenizer
from torch import nn
from transformers import (
    AutoModelForCausalLM,
    AutoTokenizer,
    GenerationConfig,
    PreTrainedTokenizerFast,
    Qwen2Config,
    Qwen2ForCausalLM,
)

REPO_ROOT = Path(__file__).resolve().parent.parent
SKIPPED_DIRS = frozenset({"test", "tests", "idle_test", "site-packages"})
GENERATED_MARKER = "with gencodec.py"
HELDOUT_PERCENT = 5
HELDOUT_SAMPLES = 48
EXCERPT_CHARS = (1500, 3000)
VOCAB_SIZE = 4096
MAX_POSITIONS = 1024
SEQ_LEN = 256
BATCH_SIZE = 16
DEFAULT_STEPS = 650
PEAK_LR = 2e-3
FINAL_LR_FRACTION = 0.1
WARMUP_FRACTION = 0.05
WEIGHT_DECAY = 0.1
LOG_EVERY = 50
THREADS = 2
PROMPT = "def fibonacci(n):"
CHATML_TEMPLATE = (
    "{% for message in messages %}"
    "{{ '<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n' }}"
    "{% endfor %}"
    "{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"
)


@dataclass(frozen=True)
class SourceFile:
    """One standard-library module: its path relative to the library root (the split key) and its text."""

    path: str
    text: str


def stdlib_sources() -> list[SourceFile]:
    """The standard library's hand-written modules, sorted by relative path so every run reads the same stream.

    Test suites are left out because they are mostly repetitive assertions, and the codec tables generated
    by `gencodec.py` (a tenth of the text) because they are hex tables rather than source or prose.
    """
    root = Path(sysconfig.get_paths()["stdlib"])
    sources = []
    for path in sorted(root.rglob("*.py"), key=lambda p: p.relative_to(root).as_posix()):
        relative = path.relative_to(root)
        if SKIPPED_DIRS.isdisjoint(relative.parts[:-1]):
            text = path.read_text(encoding="utf-8")
            if GENERATED_MARKER not in text:
                sources.append(SourceFile(relative.as_posix(), text))
    return sources


def is_heldout(path: str) -> bool:
    """Split by file, not by position: held-out text then shares no module with training, only the style."""
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") % 100 < HELDOUT_PERCENT


def excerpts(text: str) -> list[str]:
    """Consecutive runs of 1500-3000 characters of whole lines, each ending at a blank line, so samples read
    like real code: mostly whole functions or paragraphs rather than fragments cut mid-statement."""
    low, high = EXCERPT_CHARS
    chunks, lines, size = [], [], 0
    for line in text.splitlines(keepends=True):
        lines.append(line)
        size += len(line)
        if size > high:
            lines, size = [], 0
        elif size >= low and not line.strip():
            chunks.append("".join(lines))
            lines, size = [], 0
    return chunks


def round_robin_quotas(available: list[int], total: int) -> list[int]:
    """How many excerpts to take per file: one from every file before a second from any, so a few long
    modules cannot dominate the evaluation set."""
    quotas = [0] * len(available)
    while sum(quotas) < total and any(q < a for q, a in zip(quotas, available)):
        for i, count in enumerate(available):
            if quotas[i] < count and sum(quotas) < total:
                quotas[i] += 1
    return quotas


def heldout_samples(files: list[SourceFile]) -> list[dict]:
    """48 excerpts of held-out files at evenly spread offsets within each file."""
    candidates = [(f.path, excerpts(f.text)) for f in files]
    quotas = round_robin_quotas([len(chunks) for _, chunks in candidates], HELDOUT_SAMPLES)
    picked = [
        (path, chunks[(2 * i + 1) * len(chunks) // (2 * quota)])
        for (path, chunks), quota in zip(candidates, quotas)
        for i in range(quota)
    ]
    require(len(picked) == HELDOUT_SAMPLES, f"only {len(picked)} held-out excerpts available")
    return [{"id": n, "source": path, "inputs_pretokenized": text} for n, (path, text) in enumerate(picked)]


def write_jsonl(samples: list[dict], path: Path) -> None:
    """One object per line, UTF-8 kept readable, in the calibration-set format the loaders expect."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w", encoding="utf-8") as handle:
        for sample in samples:
            handle.write(json.dumps(sample, ensure_ascii=False) + "\n")


def build_tokenizer(files: list[SourceFile]) -> tuple[Tokenizer, PreTrainedTokenizerFast]:
    """The trained tokenizer, and its transformers wrapper with a ChatML template so chat tooling works too."""
    trained = train_byte_level_bpe((f.text for f in files), VOCAB_SIZE)
    wrapped = wrap_tokenizer(trained, MAX_POSITIONS)
    wrapped.chat_template = CHATML_TEMPLATE
    return trained, wrapped


def token_stream(tokenizer: Tokenizer, files: list[SourceFile]) -> torch.Tensor:
    """All training files as one token sequence, each file closed by `<|endoftext|>` as in pretraining."""
    eos = tokenizer.token_to_id(EOS_TOKEN)
    ids: list[int] = []
    for encoding in tokenizer.encode_batch([f.text for f in files], add_special_tokens=False):
        ids.extend(encoding.ids)
        ids.append(eos)
    return torch.tensor(ids, dtype=torch.long)


def batches(stream: torch.Tensor, seed: int) -> Iterator[torch.Tensor]:
    """Packed windows of `SEQ_LEN` tokens in a seeded random order, reshuffled every epoch, forever."""
    windows = stream[: len(stream) // SEQ_LEN * SEQ_LEN].view(-1, SEQ_LEN)
    generator = torch.Generator().manual_seed(seed)
    while True:
        order = torch.randperm(len(windows), generator=generator)
        for start in range(0, len(order) - BATCH_SIZE + 1, BATCH_SIZE):
            yield windows[order[start : start + BATCH_SIZE]]


def build_model(vocab_size: int, eos_id: int) -> Qwen2ForCausalLM:
    """A float32 model for training; the config already says bfloat16, the dtype it is saved in."""
    config = Qwen2Config(
        vocab_size=vocab_size,
        hidden_size=256,
        intermediate_size=704,
        num_hidden_layers=4,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=MAX_POSITIONS,
        tie_word_embeddings=True,
        rms_norm_eps=1e-6,
        bos_token_id=None,
        eos_token_id=eos_id,
        pad_token_id=eos_id,
        dtype="bfloat16",
    )
    model = Qwen2ForCausalLM(config).float()
    model.generation_config = GenerationConfig(eos_token_id=eos_id, pad_token_id=eos_id, bos_token_id=None)
    return model


def lr_factor(step: int, steps: int) -> float:
    """Linear warmup, then cosine decay to a tenth of the peak: stable start, and a settled end point."""
    warmup = max(1, round(steps * WARMUP_FRACTION))
    if step < warmup:
        return (step + 1) / warmup
    progress = (step - warmup) / max(1, steps - warmup)
    return FINAL_LR_FRACTION + (1 - FINAL_LR_FRACTION) * 0.5 * (1 + math.cos(math.pi * progress))


def make_optimizer(model: nn.Module) -> torch.optim.AdamW:
    """AdamW with weight decay on the matrices only; decaying norm gains would just fight the norms."""
    params = list(model.parameters())
    groups = [
        {"params": [p for p in params if p.dim() >= 2], "weight_decay": WEIGHT_DECAY},
        {"params": [p for p in params if p.dim() < 2], "weight_decay": 0.0},
    ]
    return torch.optim.AdamW(groups, lr=PEAK_LR, betas=(0.9, 0.95))


def train(model: nn.Module, stream: torch.Tensor, steps: int, seed: int) -> float:
    """Train in place; returns the mean loss of the last logging window."""
    optimizer = make_optimizer(model)
    scheduler = torch.optim.lr_scheduler.LambdaLR(optimizer, lambda step: lr_factor(step, steps))
    model.train()
    started, window = time.perf_counter(), []
    for step, batch in zip(range(1, steps + 1), batches(stream, seed)):
        loss = model(input_ids=batch, labels=batch).loss
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        optimizer.step()
        scheduler.step()
        optimizer.zero_grad(set_to_none=True)
        window.append(loss.item())
        if step % LOG_EVERY == 0 or step == steps:
            mean = sum(window) / len(window)
            elapsed = time.perf_counter() - started
            print(f"step {step:5d}/{steps}  loss {mean:.4f}  lr {scheduler.get_last_lr()[0]:.2e}  {elapsed:6.1f}s")
            window = []
    model.eval()
    return mean


def heldout_perplexity(model: nn.Module, tokenizer: PreTrainedTokenizerFast, texts: list[str]) -> tuple[float, int]:
    """Perplexity as `msmodelslim eval` computes it, so the numbers here match the quantization reports."""
    samples = [dict(tokenizer(t, return_tensors="pt", truncation=True, max_length=MAX_POSITIONS)) for t in texts]
    return perplexity(model, samples)


def verify(out: Path, trained: Tokenizer, texts: list[str]) -> None:
    """Reload from disk the way users will: same encodings, a bf16 perplexity, and a sample of its Python."""
    tokenizer = AutoTokenizer.from_pretrained(out, local_files_only=True)
    model = AutoModelForCausalLM.from_pretrained(out, local_files_only=True, dtype=torch.float32).eval()
    messages = [{"role": "user", "content": "hi"}]
    chat = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    expected = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    require(chat == expected, f"unexpected chat rendering {chat!r}")
    for text in [*texts, chat]:
        same = tokenizer(text)["input_ids"] == trained.encode(text).ids
        require(same, "the loaded tokenizer splits text unlike the trained one")
    print(f"reloaded {type(tokenizer).__name__}: same encodings for all {len(texts)} held-out texts and a chat")
    ppl, tokens = heldout_perplexity(model, tokenizer, texts)
    require(ppl < VOCAB_SIZE, f"held-out perplexity {ppl:.1f} is no better than guessing uniformly")
    print(f"held-out perplexity, saved bf16 weights: {ppl:.3f} over {tokens} tokens "
          f"(uniform guessing would score {VOCAB_SIZE})")
    inputs = tokenizer(PROMPT, return_tensors="pt")
    with torch.no_grad():
        generated = model.generate(**inputs, max_new_tokens=80, do_sample=False)
    print(f"greedy sample:\n{tokenizer.decode(generated[0])}")


def build(out: Path, heldout_out: Path, steps: int, seed: int) -> None:
    """Write the held-out set, then tokenizer and model files into `out`, then check them from disk."""
    torch.manual_seed(seed)
    torch.use_deterministic_algorithms(True)
    torch.set_num_threads(THREADS)
    started = time.perf_counter()
    sources = stdlib_sources()
    train_files = [f for f in sources if not is_heldout(f.path)]
    heldout = heldout_samples([f for f in sources if is_heldout(f.path)])
    texts = [s["inputs_pretokenized"] for s in heldout]
    write_jsonl(heldout, heldout_out)
    print(f"{len(train_files)} training files, {len(sources) - len(train_files)} held-out files -> {heldout_out}")
    trained, tokenizer = build_tokenizer(train_files)
    stream = token_stream(trained, train_files)
    print(f"tokenizer: {trained.get_vocab_size()} tokens; training stream {len(stream):,} tokens; "
          f"{time.perf_counter() - started:.1f}s")
    model = build_model(len(tokenizer), tokenizer.eos_token_id)
    print(f"model: {sum(p.numel() for p in model.parameters()):,} parameters")
    train_started = time.perf_counter()
    loss = train(model, stream, steps, seed)
    print(f"training took {time.perf_counter() - train_started:.1f}s; final train loss {loss:.4f}")
    ppl, tokens = heldout_perplexity(model, tokenizer, texts)
    print(f"held-out perplexity, float32 weights: {ppl:.3f} over {tokens} tokens")
    out.mkdir(parents=True, exist_ok=True)
    tokenizer.save_pretrained(out, save_jinja_files=False)  # chat template inside tokenizer_config.json
    model.to(torch.bfloat16).save_pretrained(out)
    verify(out, trained, texts)
    print(f"total {time.perf_counter() - started:.1f}s; wrote {out}")


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", type=Path, default=Path("examples/qwen2-demo"),
                        help="output directory, relative to the repository root unless absolute")
    parser.add_argument("--heldout-out", type=Path, default=Path("calib/demo_heldout.jsonl"),
                        help="held-out evaluation set, relative to the repository root unless absolute")
    parser.add_argument("--steps", type=int, default=DEFAULT_STEPS,
                        help=f"optimizer steps of {BATCH_SIZE}x{SEQ_LEN} tokens")
    parser.add_argument("--seed", type=int, default=0, help="seed for the initial weights and the data order")
    return parser.parse_args()


def main() -> None:
    args = parse_args()
    build(REPO_ROOT / args.out, REPO_ROOT / args.heldout_out, args.steps, args.seed)


if __name__ == "__main__":
    main()
