"""How much QuaRot cuts the W8A8 error of a model with outlier channels.

Two outlier kinds are injected into a copy of the model, then the copy is quantized with W8A8 static
per-tensor minmax activations (per-channel int8 weights) on every decoder linear, with and without
`quarot` first; each checkpoint is reloaded by the reference runtime and its logits compared with the
float copy's (relative L2 error over a few texts); `none` is the unmodified model for reference:
- `norm`: a few hidden channels ×50 at every RMSNorm and ÷50 in the linears reading it — the function is
  unchanged, but the per-tensor activation range is 50× too wide for all other channels;
- `residual`: a few residual-stream channels ×50 in the embeddings ("massive activations" that survive the
  norm) — nothing in the weights can undo them; only rotating them across all channels helps.

Usage (from the repository root):
    .venv/bin/python tools/bench_rotation.py --model_path examples/qwen2-demo
"""

from __future__ import annotations

import argparse
import json
import shutil
import tempfile
from pathlib import Path

import torch

OUTLIER_CHANNELS = (3, 17, 40)
OUTLIER_FACTOR = 50.0
STATIC_ACT = "{scope: per_tensor, dtype: int8, symmetric: true, method: minmax}"
WEIGHT = "{scope: per_channel, dtype: int8, symmetric: true, method: minmax}"
TEXTS = [
    "The quick brown fox jumps over the lazy dog near the river bank.",
    "Quantization maps floating point values to a small set of integers.",
    "def mean(values):\n    return sum(values) / len(values)",
]


@torch.no_grad()
def inject_outliers(model_dir: Path, target: Path, kind: str) -> Path:
    """Copy `model_dir` to `target` (fp32) with outlier channels of `kind` ('norm' or 'residual')."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True)
    channels = list(OUTLIER_CHANNELS)
    if kind == "norm":
        for layer in model.model.layers:
            pairs = ((layer.input_layernorm, ("q_proj", "k_proj", "v_proj"), layer.self_attn),
                     (layer.post_attention_layernorm, ("gate_proj", "up_proj"), layer.mlp))
            for norm, names, parent in pairs:
                norm.weight[channels] *= OUTLIER_FACTOR
                for name in names:
                    getattr(parent, name).weight[:, channels] /= OUTLIER_FACTOR
    elif kind == "none":
        pass
    elif kind == "residual":
        if model.get_output_embeddings().weight is model.get_input_embeddings().weight:
            model.get_output_embeddings().weight = torch.nn.Parameter(model.get_input_embeddings().weight.clone())
            model.config.tie_word_embeddings = False
        model.get_input_embeddings().weight[:, channels] *= OUTLIER_FACTOR
    else:
        raise ValueError(kind)
    target.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(target, safe_serialization=True)
    for side in Path(model_dir).iterdir():
        if side.is_file() and side.name.startswith(("tokenizer", "special_tokens")):
            shutil.copyfile(side, target / side.name)
    return target


def config_text(dataset: Path, quarot: bool) -> str:
    rotation = "    - {type: quarot}\n" if quarot else ""
    return (
        "apiversion: modelslim_v1\nspec:\n  runner: model_wise\n  process:\n"
        f"{rotation}    - {{type: linear_quant, qconfig: {{act: {STATIC_ACT}, weight: {WEIGHT}}}, include: ['model.layers.*']}}\n"
        f"  save: [{{type: ascendv1_saver, part_file_size: 0}}]\n  dataset: {dataset}\n"
    )


@torch.no_grad()
def logits_error(model_dir: Path, quant_dir: Path) -> float:
    """Relative L2 error of the reloaded checkpoint's logits against the float model's, over TEXTS."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modelslim_core.reference_runtime import load_quantized_model

    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    float_model = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True).eval()
    quant_model = load_quantized_model(model_dir, quant_dir)
    diff = total = 0.0
    for text in TEXTS:
        ids = tokenizer(text, return_tensors="pt").input_ids
        expected = float_model(input_ids=ids, use_cache=False).logits
        actual = quant_model(input_ids=ids, use_cache=False).logits
        diff += float((actual - expected).pow(2).sum())
        total += float(expected.pow(2).sum())
    return (diff / total) ** 0.5


def quantize(model_dir: Path, work: Path, quarot: bool) -> Path:
    from modelslim.app.quick_quant import QuantArgs, run_quant

    work.mkdir(parents=True, exist_ok=True)
    dataset = work / "calib.jsonl"
    dataset.write_text("".join(json.dumps({"inputs_pretokenized": t}) + "\n" for t in TEXTS), encoding="utf-8")
    config = work / f"w8a8{'-quarot' if quarot else ''}.yaml"
    config.write_text(config_text(dataset, quarot), encoding="utf-8")
    out = work / config.stem
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config), device="cpu"))
    return out


def measure(model_dir: Path, work: Path, kind: str) -> dict[str, float]:
    """W8A8 logits error without and with QuaRot on a copy of the model with `kind` outliers."""
    outlier_model = inject_outliers(model_dir, work / f"model-{kind}", kind)
    plain = logits_error(outlier_model, quantize(outlier_model, work / f"{kind}-plain", quarot=False))
    rotated = logits_error(outlier_model, quantize(outlier_model, work / f"{kind}-quarot", quarot=True))
    return {"w8a8": plain, "quarot+w8a8": rotated, "factor": plain / rotated}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model_path", default="examples/qwen2-demo")
    args = parser.parse_args()
    print("| outliers | W8A8 logits rel. error | QuaRot + W8A8 | factor |\n|---|---|---|---|")
    with tempfile.TemporaryDirectory() as tmp:
        for kind in ("none", "norm", "residual"):
            (Path(tmp) / kind).mkdir()
            row = measure(Path(args.model_path), Path(tmp) / kind, kind)
            label = kind if kind == "none" else f"{kind} (×{OUTLIER_FACTOR:g} on channels {list(OUTLIER_CHANNELS)})"
            print(f"| {label} | {row['w8a8']:.4f} | "
                  f"{row['quarot+w8a8']:.4f} | {row['factor']:.1f}× |", flush=True)


if __name__ == "__main__":
    main()
