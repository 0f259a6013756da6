"""Wall time and peak memory of whole `msmodelslim quant` processes against one float forward.

The developers' guide states our speed goals on a ~137M-parameter Qwen2 with 32 calibration samples of 256
tokens, on this 2-core CPU: one float32 forward over the calibration set took 21.5 s as a whole process,
llm-compressor's SmoothQuant+W8A8 40.4 s and its GPTQ 83 s. Targets: SmoothQuant W8A8 <= 1.3x one forward
(<= 0.7x llm-compressor), GPTQ <= 0.6x llm-compressor. This tool builds a random-weight Qwen2 of that size
(bf16 checkpoint, the example tokenizer, `max_position_embeddings` 256 so every sample is cut to exactly 256
tokens), a 32-text calibration set, and times, each as its own process (import, load, work, save):

- `forward`: transformers loads the model in float32 and runs the 32 samples (the baseline);
- `smooth_quant+w8a8`: smooth_quant then W8A8 static (per-tensor asymmetric activations, per-channel weights);
- `gptq w4a16`: GPTQ int4 per-channel weights (compressed_tensors_saver), with the auto runner (model_wise
  here) and layer-wise;
- `w8a8_dynamic model_wise` / `layer_wise`: the data-free W8A8_DYNAMIC with the whole model loaded, and
  layer by layer: the memory comparison (the import of torch and transformers alone is ~0.85 GiB here).

Peak RSS comes from the kernel's accounting of each child process. Figures depend on the machine's load;
compare ratios measured in one run.

    uv run python tools/bench_speed.py [--layers 12] [--only gptq]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.tiny_models import make_tiny_model  # noqa: E402

SAMPLES, TOKENS = 32, 256
GUIDE_SECONDS = {"forward": 21.5, "smooth_quant+w8a8": 40.4, "gptq w4a16": 83.0}
TARGET_VS_FORWARD = {"smooth_quant+w8a8": 1.3}
TARGET_VS_LLMC = {"smooth_quant+w8a8": 0.7, "gptq w4a16": 0.6}

def linear_quant_item(weight: str, act: str | None = None) -> str:
    """One `spec.process` item quantizing every linear (act None: weight-only)."""
    act_line = f"        act: {act}\n" if act else ""
    return f"    - type: linear_quant\n      qconfig:\n{act_line}        weight: {weight}\n      include: [\"*\"]\n"


INT8_WEIGHT = "{scope: per_channel, dtype: int8, symmetric: true, method: minmax}"
STATIC_W8A8 = linear_quant_item(INT8_WEIGHT, "{scope: per_tensor, dtype: int8, symmetric: false, method: minmax}")
DYNAMIC_W8A8 = linear_quant_item(INT8_WEIGHT, "{scope: per_token, dtype: int8, symmetric: true, method: minmax}")
GPTQ_W4A16 = linear_quant_item("{scope: per_channel, dtype: int4, symmetric: true, method: gptq}")
PIPELINES = {
    "smooth_quant+w8a8": ("auto", "    - {type: smooth_quant, alpha: 0.5}\n" + STATIC_W8A8, "ascendv1_saver"),
    "gptq w4a16": ("auto", GPTQ_W4A16, "compressed_tensors_saver"),
    "w8a8_dynamic model_wise": ("model_wise", DYNAMIC_W8A8, "ascendv1_saver"),
    "w8a8_dynamic layer_wise": ("layer_wise", DYNAMIC_W8A8, "ascendv1_saver"),
    "gptq w4a16 layer_wise": ("layer_wise", GPTQ_W4A16, "compressed_tensors_saver"),
}

FORWARD = """\
import json, sys, torch
from transformers import AutoModelForCausalLM, AutoTokenizer
model_dir, dataset = sys.argv[1], sys.argv[2]
texts = [json.loads(line)["text"] for line in open(dataset, encoding="utf-8")]
tokenizer = AutoTokenizer.from_pretrained(model_dir)
model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).eval()
with torch.no_grad():
    for text in texts:
        model(**tokenizer(text, return_tensors="pt", truncation=True, max_length=%d))
""" % TOKENS


def build_model(target: Path, layers: int) -> tuple[Path, int]:
    path = make_tiny_model(target, "qwen2", torch.bfloat16, hidden_size=1024, intermediate_size=2560,
                           num_hidden_layers=layers, num_attention_heads=16, num_key_value_heads=4,
                           max_position_embeddings=TOKENS)
    config = json.loads((path / "config.json").read_text())
    hidden, inter, vocab = config["hidden_size"], config["intermediate_size"], config["vocab_size"]
    kv = hidden // config["num_attention_heads"] * config["num_key_value_heads"]
    per_layer = 2 * hidden * hidden + 2 * hidden * kv + 3 * hidden * inter
    return path, layers * per_layer + 2 * vocab * hidden


def build_dataset(target: Path) -> Path:
    """32 texts of at least 256 tokens: the shipped calibration texts concatenated in turn."""
    texts = [json.loads(line)["inputs_pretokenized"] for line in (REPO / "calib" / "mix_calib.jsonl").open(encoding="utf-8")]
    joined = "\n\n".join(texts)
    step = len(joined) // SAMPLES
    samples = [joined[i * step:(i + 1) * step] for i in range(SAMPLES)]
    target.write_text("".join(json.dumps({"text": s}, ensure_ascii=False) + "\n" for s in samples), encoding="utf-8")
    return target


def timed(command: list[str]) -> tuple[float, float]:
    """Wall seconds and peak RSS (GiB) of one child process."""
    started = time.perf_counter()
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, stdin=subprocess.DEVNULL)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    if os.waitstatus_to_exitcode(status) != 0:
        raise SystemExit(f"{' '.join(command[:4])} failed:\n{process.stderr.read().decode()[-3000:]}")
    return seconds, usage.ru_maxrss / 2**20  # ru_maxrss is in KiB on Linux


def config_text(runner: str, process: str, saver: str, dataset: Path) -> str:
    return (f"apiversion: modelslim_v1\nspec:\n  runner: {runner}\n  process:\n{process}"
            f"  save: [{{type: {saver}, part_file_size: 0}}]\n  dataset: {dataset}\n")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--only", default="", help="comma-separated substrings of the pipelines to run")
    args = parser.parse_args()
    wanted = [w for w in args.only.split(",") if w]
    with tempfile.TemporaryDirectory() as tmp:
        work = Path(tmp)
        model, params = build_model(work / "model", args.layers)
        dataset = build_dataset(work / "calib.jsonl")
        rows = {"forward": timed([sys.executable, "-c", FORWARD, str(model), str(dataset)])}
        for name, (runner, process, saver) in PIPELINES.items():
            if wanted and not any(w in name for w in wanted):
                continue
            config = work / f"{len(rows)}.yaml"
            config.write_text(config_text(runner, process, saver, dataset))
            rows[name] = timed([sys.executable, "-m", "modelslim.cli.main", "quant", "--model_path", str(model),
                                "--save_path", str(work / f"out{len(rows)}"), "--model_type", "Qwen2-demo",
                                "--config_path", str(config), "--device", "cpu"])
    forward_seconds, forward_rss = rows["forward"]
    print(f"\nQwen2, {params / 1e6:.0f}M parameters ({args.layers} layers, hidden 1024), {SAMPLES} x {TOKENS} "
          f"calibration tokens, {torch.get_num_threads()} threads\n")
    print("| process | wall s | x one forward | target | peak RSS GiB | x forward's RSS |")
    print("|---|---|---|---|---|---|")
    for name, (seconds, rss) in rows.items():
        target = []
        if name in TARGET_VS_FORWARD:
            target.append(f"<= {TARGET_VS_FORWARD[name]}x forward")
        if name in TARGET_VS_LLMC:
            limit = TARGET_VS_LLMC[name] * GUIDE_SECONDS[name] / GUIDE_SECONDS["forward"]
            target.append(f"<= {limit:.2f}x forward ({TARGET_VS_LLMC[name]}x llm-compressor)")
        print(f"| {name} | {seconds:.1f} | {seconds / forward_seconds:.2f} | {'; '.join(target) or '-'} | "
              f"{rss:.2f} | {rss / forward_rss:.2f} |")


if __name__ == "__main__":
    main()
