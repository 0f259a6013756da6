"""`msmodelslim eval` against one float forward over the same tokens, and where eval's time goes.

Goal (developers' guide, issue "analyze and tune"): eval costs no more than about two float forwards over
its tokens. By default this tool builds a random-weight Llama with SmolLM2-135M's dimensions (hidden 576,
intermediate 1536, 9 heads / 3 KV heads, vocabulary 49152, tied embeddings; `--layers` of its 30 layers);
`--run PATH MODEL_TYPE DATASET SCHEMES` (repeatable) times real checkpoints instead, all in one process so
their ratios come from one run. Each scheme is quantized once, then timed in this process:

- `float forward`: the float32 model over the eval samples (transformers, no hooks): the unit of every ratio;
- `quantized forward`: the reference runtime's model over the same samples (the integer kernels);
- `eval`: the whole `run_eval` (both loads, per-layer errors, both perplexities, the report and its plot),
  and the same without its two checkpoint loads (timed inside the run), the figure the goal is about;
- `judge`: tune's perplexity judge (`evaluate.end_to_end`, both loads, no per-layer errors) in its first round
  (float and quantized perplexity) and in a later round (the float perplexity is known: quantized only).

Every time is process CPU seconds (the honest figure on a shared host); ratios are over the float forward's.

    uv run python tools/bench_eval_speed.py [--layers 8] [--schemes w8a8,w8a8_dynamic,w4a4]
    uv run python tools/bench_eval_speed.py \
        --run examples/qwen2-demo Qwen2-demo calib/demo_heldout.jsonl w8a8,w8a8_dynamic \
        --run /path/to/SmolLM2-135M Llama calib/heldout_eval.jsonl w8a8_dynamic

`--max_samples N` evaluates the first N samples (default: every sample, as `msmodelslim eval` does).
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.tiny_models import copy_tokenizer  # noqa: E402

DIMS = dict(hidden_size=576, intermediate_size=1536, num_attention_heads=9, num_key_value_heads=3,
            max_position_embeddings=1024, tie_word_embeddings=True)
VOCAB = 49152
DATASET = str(REPO / "calib" / "heldout_eval.jsonl")
INT8_WEIGHT = "{scope: per_channel, dtype: int8, symmetric: true, method: minmax}"
SCHEMES = {
    "w8a8": (INT8_WEIGHT, "{scope: per_tensor, dtype: int8, symmetric: false, method: minmax}"),
    "w8a8_dynamic": (INT8_WEIGHT, "{scope: per_token, dtype: int8, symmetric: true, method: minmax}"),
    "w8a16_group": ("{scope: per_group, dtype: int8, symmetric: false, method: minmax, ext: {group_size: 64}}", None),
    "w4a4": ("{scope: per_channel, dtype: int4, symmetric: true, method: minmax}",
             "{scope: per_token, dtype: int4, symmetric: true, method: minmax}"),
}


def build_model(target: Path, layers: int) -> Path:
    """A bf16 random-weight Llama at SmolLM2-135M width with the example tokenizer (its ids fit the vocabulary)."""
    from transformers import AutoModelForCausalLM, LlamaConfig

    target.mkdir(parents=True)
    copy_tokenizer(target)
    torch.manual_seed(0)
    config = LlamaConfig(vocab_size=VOCAB, num_hidden_layers=layers, **DIMS)
    AutoModelForCausalLM.from_config(config, dtype=torch.float32).to(torch.bfloat16).save_pretrained(target)
    return target


def config_text(weight: str, act: str | None) -> str:
    act_line = f"        act: {act}\n" if act else ""
    return ("apiversion: modelslim_v1\nspec:\n  process:\n    - type: linear_quant\n      qconfig:\n"
            f"{act_line}        weight: {weight}\n      include: [\"*\"]\n"
            f"  save: [{{type: ascendv1_saver, part_file_size: 0}}]\n  dataset: {REPO / 'calib' / 'mix_calib.jsonl'}\n")


def seconds(fn) -> tuple[float, float]:
    """(wall, CPU) seconds of fn()."""
    wall, cpu = time.perf_counter(), time.process_time()
    fn()
    return time.perf_counter() - wall, time.process_time() - cpu


class LoadTimer:
    """CPU seconds run_eval spends in its two checkpoint loads (the float model and the reference runtime's)."""

    def __init__(self, evaluate):
        self.evaluate = evaluate
        self.seconds = 0.0

    def __enter__(self) -> "LoadTimer":
        self.saved = self.evaluate._load_float, self.evaluate._load_quantized
        self.evaluate._load_float = self._timed(self.saved[0])
        self.evaluate._load_quantized = self._timed(self.saved[1])
        return self

    def _timed(self, load):
        def timed(*args, **kwargs):
            started = time.process_time()
            try:
                return load(*args, **kwargs)
            finally:
                self.seconds += time.process_time() - started
        return timed

    def __exit__(self, *exc) -> None:
        self.evaluate._load_float, self.evaluate._load_quantized = self.saved


def bench_model(model_dir: Path, model_type: str, dataset: str, schemes: list[str], work: Path, max_samples: int | None,
                label: str) -> list[str]:
    """Rows of the ratio table for one float checkpoint and its schemes."""
    from modelslim.app import evaluate
    from modelslim.app.quick_quant import QuantArgs, run_quant
    from modelslim_core.calib.text import load_texts
    from modelslim_core.reference_runtime.loader import load_quantized_model

    float_model, _ = evaluate._load_float(model_dir, torch.device("cpu"))
    samples = evaluate._tokenize(model_dir, load_texts(dataset)[:max_samples])
    tokens = sum(s["input_ids"].shape[1] for s in samples)
    with torch.no_grad():
        float_model(**samples[0])  # first-call costs (allocator, kernels' setup) are not the per-token cost
        _, float_s = seconds(lambda: [float_model(**s) for s in samples])
    del float_model
    rows = []
    for scheme in schemes:
        config = work / f"{label}_{scheme}.yaml"
        config.write_text(config_text(*SCHEMES[scheme]))
        out = work / f"out_{label}_{scheme}"
        run_quant(QuantArgs(str(model_dir), str(out), model_type, config_path=str(config), device="cpu"))
        quant_model = load_quantized_model(model_dir, out)
        with torch.no_grad():
            quant_model(**samples[0])
            _, quant_s = seconds(lambda: [quant_model(**s) for s in samples])
        del quant_model
        eval_args = evaluate.EvalArgs(str(model_dir), str(out), dataset, device="cpu", max_samples=max_samples)
        with LoadTimer(evaluate) as loads:
            _, eval_s = seconds(lambda: evaluate.run_eval(eval_args))
        known = []
        _, first_s = seconds(lambda: known.append(evaluate.end_to_end(eval_args)[1]))
        _, later_s = seconds(lambda: evaluate.end_to_end(eval_args, known[0]))
        ratio = (eval_s - loads.seconds) / float_s
        rows.append(f"| {label} | {scheme} | {len(samples)} / {tokens} | {float_s:.2f} | {quant_s:.2f} ({quant_s / float_s:.2f}) "
                    f"| {eval_s:.2f} ({eval_s / float_s:.2f}) | {loads.seconds:.2f} | **{ratio:.2f}x** "
                    f"| {first_s:.2f} ({first_s / float_s:.2f}) | {later_s:.2f} ({later_s / float_s:.2f}) |")
        print(f"{label} {scheme}: eval without its loads / float forward = {ratio:.2f}x (target <= ~2.0x); "
              f"with the loads ({loads.seconds:.2f} s CPU) {eval_s / float_s:.2f}x", flush=True)
    return rows


def check_runs(parser: argparse.ArgumentParser, runs: list[list[str]], schemes: list[str]) -> None:
    """Every --run names a float checkpoint directory, a dataset file and known schemes: checked before the first
    model loads, so a typo in the third run does not surface after minutes of timing the first two."""
    known = ", ".join(sorted(SCHEMES))
    for path, _model_type, dataset, run_schemes in runs:
        if not (Path(path) / "config.json").is_file():
            parser.error(f"--run PATH {path!r} is not a checkpoint directory (no config.json there): give the "
                         "float model's directory.")
        if not Path(dataset).is_file():
            parser.error(f"--run DATASET {dataset!r} is not a file: give a .jsonl of texts, e.g. calib/heldout_eval.jsonl.")
        schemes = schemes + run_schemes.split(",")
    unknown = [scheme for scheme in schemes if scheme and scheme not in SCHEMES]
    if unknown:
        parser.error(f"unknown scheme(s) {', '.join(unknown)} in --schemes/--run SCHEMES: choose from {known}.")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--schemes", default="w8a8,w8a8_dynamic,w4a4")
    parser.add_argument("--max_samples", type=int, default=None)
    parser.add_argument("--run", nargs=4, action="append", metavar=("PATH", "MODEL_TYPE", "DATASET", "SCHEMES"),
                        help="a float checkpoint to time instead of the random SmolLM2-width Llama (repeatable)")
    args = parser.parse_args()
    check_runs(parser, args.run or [], args.schemes.split(","))

    print(f"{torch.get_num_threads()} threads, load average at start {os.getloadavg()[0]:.1f}", flush=True)
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        if args.run:
            for path, model_type, dataset, schemes in args.run:
                model_dir = Path(path).resolve()
                rows += bench_model(model_dir, model_type, dataset, schemes.split(","), work, args.max_samples,
                                    model_dir.name)
        else:
            model_dir = build_model(work / "model", args.layers)
            rows += bench_model(model_dir, "Llama-demo", DATASET, [s for s in args.schemes.split(",") if s], work,
                                args.max_samples, f"Llama {args.layers} layers at SmolLM2-135M width")
    print(f"\nCPU seconds (x the float forward over the same tokens); load average at the end {os.getloadavg()[0]:.1f}\n")
    print("| model | scheme | samples / tokens | float forward | quantized forward | eval | eval's two loads "
          "| eval without loads / float | judge, first round | judge, later round |")
    print("|---|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
