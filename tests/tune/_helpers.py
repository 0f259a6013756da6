"""A tiny Llama with function-preserving activation outliers injected into chosen layers, and its W8A8 config."""

from __future__ import annotations

import json
from pathlib import Path

import torch
import yaml
from safetensors.torch import load_file, save_file

from tests.tiny_models import make_tiny_model

#: layer -> factor: up_proj row 0 is multiplied and down_proj column 0 divided by it, so the float model is
#: unchanged but down_proj's input carries an outlier channel that per-tensor W8A8 activations cannot hold.
OUTLIERS = {2: 400.0, 0: 40.0}
LAYERS = 4
TEXTS = ["The quick brown fox jumps over the lazy dog.", "def add(a, b):\n    return a + b",
         "Quantization reduces the memory a model needs.", "Q: What is 12 * 7? A: 84.",
         "Every layer of the network sees the same tokens.", "import os\nprint(os.getcwd())"]


def make_outlier_model(target: Path, outliers: dict[int, float] = OUTLIERS) -> Path:
    make_tiny_model(target, "llama", torch.float32, num_hidden_layers=LAYERS)
    return inject_outliers(target, {f"model.layers.{layer}.mlp": factor for layer, factor in outliers.items()})


def inject_outliers(model_dir: Path, mlps: dict[str, float]) -> Path:
    """In each gated MLP named by its checkpoint prefix (`model.layers.1.mlp`, `...experts.2`), multiply
    up_proj's row 0 and divide down_proj's column 0 by the factor: the same function, one outlier channel."""
    weights_file = model_dir / "model.safetensors"
    weights = load_file(weights_file)
    for prefix, factor in mlps.items():
        weights[f"{prefix}.up_proj.weight"][0] *= factor
        weights[f"{prefix}.down_proj.weight"][:, 0] /= factor
    save_file(weights, weights_file, metadata={"format": "pt"})
    return model_dir


def write_calib(path: Path) -> Path:
    path.write_text("".join(json.dumps({"inputs_pretokenized": t}) + "\n" for t in TEXTS), encoding="utf-8")
    return path


def w8a8_config(dataset: Path, exclude: list[str] | None = None) -> dict:
    act = {"scope": "per_tensor", "dtype": "int8", "symmetric": False, "method": "minmax"}
    weight = {"scope": "per_channel", "dtype": "int8", "symmetric": True, "method": "minmax"}
    return {"apiversion": "modelslim_v1", "spec": {
        "runner": "model_wise",
        "process": [{"type": "linear_quant", "qconfig": {"act": act, "weight": weight}, "include": ["*"],
                     "exclude": list(exclude or [])}],
        "save": [{"type": "ascendv1_saver", "part_file_size": 0}],
        "dataset": str(dataset)}}


def write_config(path: Path, config: dict) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path
