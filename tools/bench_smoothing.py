"""How much each smoothing processor helps W8A8 static quantization on a model with activation outliers.

The outlier model is a tiny random Qwen2 whose norms multiply a few hidden channels by FACTOR while the
linears reading them divide the same weight columns by FACTOR: the float function is unchanged, but
per-tensor static int8 activations must now cover a range FACTOR times wider, so every other channel
loses ~log2(FACTOR) bits. Each pipeline is run through `msmodelslim quant`, the saved checkpoint is
reloaded with the reference runtime, and its logits are compared with the float model's.

    uv run python tools/bench_smoothing.py            # prints the table README.md quotes
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
from pathlib import Path

import torch
import yaml

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from tests.tiny_models import make_tiny_model  # noqa: E402

OUTLIER_CHANNELS = (3, 17, 40)
FACTOR = 50.0
W8A8_STATIC = {"act": {"scope": "per_tensor", "dtype": "int8", "symmetric": False, "method": "minmax"},
               "weight": {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}}
#: The smoothing step of each pipeline (None: plain W8A8 static, the baseline).
SMOOTHING_STEPS: dict[str, dict | None] = {
    "none": None,
    "smooth_quant": {"type": "smooth_quant"},
    "iter_smooth": {"type": "iter_smooth"},
    "flex_smooth_quant": {"type": "flex_smooth_quant"},
    "flex_awq_ssz": {"type": "flex_awq_ssz", "qconfig": W8A8_STATIC},
    "awq": {"type": "awq", "weight_qconfig": W8A8_STATIC["weight"], "n_grid": 10},
}
EVAL_TEXTS = [
    "Smoothing moves outliers from activations into weights.",
    "1, 1, 2, 3, 5, 8, 13, 21, 34",
    "The committee will meet again next Tuesday to review the budget.",
    "import torch\nx = torch.zeros(3)\nprint(x.sum())",
]


@torch.no_grad()
def make_outlier_model(target: Path) -> Path:
    """A float32 tiny Qwen2 with FACTOR-times larger activations on OUTLIER_CHANNELS at both norms."""
    from transformers import AutoModelForCausalLM

    make_tiny_model(target, "qwen2", torch.float32)
    model = AutoModelForCausalLM.from_pretrained(target, dtype=torch.float32, local_files_only=True)
    channels = list(OUTLIER_CHANNELS)
    for layer in model.model.layers:
        for norm, consumers in ((layer.input_layernorm, (layer.self_attn.q_proj, layer.self_attn.k_proj, layer.self_attn.v_proj)),
                                (layer.post_attention_layernorm, (layer.mlp.gate_proj, layer.mlp.up_proj))):
            norm.weight[channels] *= FACTOR
            for linear in consumers:
                linear.weight[:, channels] /= FACTOR
    model.save_pretrained(target, safe_serialization=True)
    return target


def write_config(path: Path, smoothing: dict | None, dataset: Path) -> Path:
    process = ([smoothing] if smoothing else []) + [{"type": "linear_quant", "qconfig": W8A8_STATIC}]
    spec = {"runner": "model_wise", "process": process, "save": [{"type": "ascendv1_saver", "part_file_size": 0}],
            "dataset": str(dataset)}
    path.write_text(yaml.safe_dump({"apiversion": "modelslim_v1", "spec": spec}, sort_keys=False))
    return path


@torch.no_grad()
def logits(model, tokenizer) -> torch.Tensor:
    return torch.cat([model(**tokenizer(t, return_tensors="pt"), use_cache=False).logits[0].float() for t in EVAL_TEXTS])


def output_error(model_dir: Path, smoothing: dict | None, dataset: Path, work: Path) -> float:
    """Relative L2 error of the logits of the quantized checkpoint against the float model."""
    from transformers import AutoModelForCausalLM, AutoTokenizer

    from modelslim.app.quick_quant import QuantArgs, run_quant
    from modelslim_core.reference_runtime import load_quantized_model

    name = smoothing["type"] if smoothing else "none"
    out = work / f"out-{name}"
    config = write_config(work / f"{name}.yaml", smoothing, dataset)
    run_quant(QuantArgs(str(model_dir), str(out), "Qwen2-demo", config_path=str(config), device="cpu"))
    tokenizer = AutoTokenizer.from_pretrained(model_dir, local_files_only=True)
    exact = logits(AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32, local_files_only=True), tokenizer)
    approx = logits(load_quantized_model(model_dir, out), tokenizer)
    return float((approx - exact).norm() / exact.norm())


def bench(dataset: Path, work: Path, steps: dict[str, dict | None] = SMOOTHING_STEPS) -> dict[str, float]:
    model_dir = make_outlier_model(work / "outlier-model")
    return {name: output_error(model_dir, step, dataset, work) for name, step in steps.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--dataset", type=Path, default=REPO / "calib" / "mix_calib.jsonl")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        errors = bench(args.dataset.resolve(), Path(tmp))
    baseline = errors["none"]
    print(f"W8A8 static (per-tensor asym int8 act), {len(OUTLIER_CHANNELS)} hidden channels x{FACTOR:g} at both norms")
    print("| smoothing | logit rel. error | error reduction |")
    print("|---|---|---|")
    for name, error in errors.items():
        print(f"| {name} | {error:.4f} | {baseline / error:.1f}x |")
    print(json.dumps(errors))


if __name__ == "__main__":
    main()
