"""`msmodelslim eval` against one float forward over the same tokens, and where eval's time goes.

Goal (developers' guide, issue "analyze and tune"): eval costs no more than about two float forwards over
its tokens. This tool builds a random-weight Llama with SmolLM2-135M's dimensions (hidden 576,
intermediate 1536, 9 heads / 3 KV heads, vocabulary 49152, tied embeddings; `--layers` of its 30 layers),
quantizes it once per scheme, and times in this process:

- `float forward`: the float32 model over the eval samples (transformers, no hooks);
- `quantized forward`: the reference runtime's model over the same samples (the integer kernels);
- `eval`: the whole `run_eval` (both loads, per-layer errors, both perplexities, the report);
- `judge`: tune's perplexity judge (`evaluate.end_to_end`, both loads, no per-layer errors) in its first round
  (float and quantized perplexity) and in a later round (the float perplexity is known: quantized only).

Every time is wall and process CPU seconds (CPU is the honest figure on a shared host); ratios are CPU over
the float forward's CPU.

    uv run python tools/bench_eval_speed.py [--layers 8] [--schemes w8a8,w8a8_dynamic,w4a8_group]

`--model_path DIR` (with `--model_type`) times a real checkpoint instead, e.g. the demo LM with its own held-out
set: `--model_path examples/qwen2-demo --model_type Qwen2-demo --dataset calib/demo_heldout.jsonl`.
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


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=8)
    parser.add_argument("--schemes", default="w8a8,w8a8_dynamic,w4a4")
    parser.add_argument("--max_samples", type=int, default=6)
    parser.add_argument("--model_path", help="a float checkpoint to time instead of the random SmolLM2-width Llama")
    parser.add_argument("--model_type", default="Llama-demo")
    parser.add_argument("--dataset", default=DATASET)
    args = parser.parse_args()

    from modelslim.app import evaluate
    from modelslim.app.quick_quant import QuantArgs, run_quant
    from modelslim_core.calib.text import load_texts
    from modelslim_core.reference_runtime.loader import load_quantized_model

    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model_dir = Path(args.model_path).resolve() if args.model_path else build_model(work / "model", args.layers)
        float_model, _ = evaluate._load_float(model_dir, torch.device("cpu"))
        texts = load_texts(args.dataset)[: args.max_samples]
        samples = evaluate._tokenize(model_dir, texts)
        tokens = sum(s["input_ids"].shape[1] for s in samples)
        with torch.no_grad():
            float_wall, float_s = seconds(lambda: [float_model(**s) for s in samples])
        what = model_dir.name if args.model_path else f"Llama {args.layers} layers at SmolLM2-135M width"
        print(f"\n{what}, {len(samples)} samples, {tokens} tokens, "
              f"{torch.get_num_threads()} threads, load average {os.getloadavg()[0]:.1f}; float forward "
              f"{float_wall:.2f} s wall, {float_s:.2f} s CPU\n")
        print("| scheme | quantized forward CPU s (x float) | eval CPU s (x float) | judge, first round CPU s (x float) "
              "| judge, later round CPU s (x float) |")
        print("|---|---|---|---|---|")
        for scheme in [s for s in args.schemes.split(",") if s]:
            config = work / f"{scheme}.yaml"
            config.write_text(config_text(*SCHEMES[scheme]))
            out = work / f"out_{scheme}"
            run_quant(QuantArgs(str(model_dir), str(out), args.model_type, config_path=str(config), device="cpu"))
            quant_model = load_quantized_model(model_dir, out)
            with torch.no_grad():
                _, quant_s = seconds(lambda: [quant_model(**s) for s in samples])
            del quant_model
            eval_args = evaluate.EvalArgs(str(model_dir), str(out), args.dataset, device="cpu", max_samples=args.max_samples)
            _, eval_s = seconds(lambda: evaluate.run_eval(eval_args))
            known = []
            _, first_s = seconds(lambda: known.append(evaluate.end_to_end(eval_args)[1]))
            _, later_s = seconds(lambda: evaluate.end_to_end(eval_args, known[0]))
            print(f"| {scheme} | " + " | ".join(f"{cpu:.2f} ({cpu / float_s:.2f})" for cpu in (quant_s, eval_s, first_s, later_s))
                  + " |")


if __name__ == "__main__":
    main()
