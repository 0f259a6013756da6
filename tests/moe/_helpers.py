"""Running the MoE practices on tiny models: the practice YAML with the tiny model's last layer and dataset."""

from __future__ import annotations

import json
import re
from pathlib import Path

import torch
import yaml
from safetensors import safe_open

from modelslim.app.quick_quant import QuantArgs, run_quant
from tests.quant_runs import STATIC_ACT, WEIGHT_SYM

REPO = Path(__file__).resolve().parents[2]
PRACTICES = {
    ("qwen3_moe", "w8a8"): REPO / "practices/qwen3_moe/qwen3_moe-w8a8.yaml",
    ("qwen3_moe", "w4a8"): REPO / "practices/qwen3_moe/qwen3_moe-30b-w4a8.yaml",
    ("deepseek_v3", "w8a8"): REPO / "practices/deepseek_v3/deepseek_v3-w8a8.yaml",
    ("deepseek_v3", "w4a8"): REPO / "practices/deepseek_v3/deepseek_v3-w4a8.yaml",
    ("deepseek_v32", "w8a8"): REPO / "practices/deepseek_v3_2/deepseek_v3_2-w8a8.yaml",
    ("deepseek_v32", "w4a8"): REPO / "practices/deepseek_v3_2/deepseek_v3_2-w4a8.yaml",
}
MODEL_TYPES = {"qwen3_moe": "Qwen3-30B-A3B", "deepseek_v3": "DeepSeek-V3", "deepseek_v32": "DeepSeek-V3.2-Exp"}


def static_w8a8_config(include: str, runner: str, dataset: Path) -> str:
    """One linear_quant with static per-tensor activations (needs calibration data) on `include`."""
    return (f"apiversion: modelslim_v1\nspec:\n  runner: {runner}\n  process:\n"
            f"    - {{type: linear_quant, qconfig: {{act: {STATIC_ACT}, weight: {WEIGHT_SYM}}}, include: [{include!r}]}}\n"
            f"  save: [{{type: ascendv1_saver, part_file_size: 0}}]\n  dataset: {dataset}\n")


def tiny_practice(arch: str, quant_type: str, last_layer: int, dataset: Path, runner: str, target: Path) -> Path:
    """The shipped practice, retargeted: its last-layer rule names the tiny model's last layer."""
    text = PRACTICES[arch, quant_type].read_text(encoding="utf-8")
    text = re.sub(r"model\.layers\.\d+\.(mlp\.experts\.|)\*", f"model.layers.{last_layer}.\\1*", text)
    data = yaml.safe_load(text)
    data["spec"]["runner"] = runner
    data["spec"]["save"][0]["part_file_size"] = 0
    if "dataset" in data["spec"]:
        data["spec"]["dataset"] = str(dataset)
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def quantize(model_dir: Path, out: Path, model_type: str, config: Path | None = None, quant_type: str | None = None,
             tags: list[str] | None = None) -> Path:
    return run_quant(QuantArgs(str(model_dir), str(out), model_type, config_path=None if config is None else str(config),
                               quant_type=quant_type, device="cpu", yes=True, tags=tags))


def saved(out: Path) -> tuple[dict[str, str], dict[str, tuple[torch.dtype, tuple[int, ...]]]]:
    """The description's tags and every saved tensor's (dtype, shape)."""
    description = json.loads((out / "quant_model_description.json").read_text())
    metas = {}
    for file in out.glob("quant_model_weights*.safetensors"):
        with safe_open(file, framework="pt") as handle:
            for name in handle.keys():
                tensor = handle.get_tensor(name)
                metas[name] = (tensor.dtype, tuple(tensor.shape))
    return description, metas


def relative_logit_error(model_dir: Path, out: Path, ids: torch.Tensor) -> float:
    from transformers import AutoModelForCausalLM

    from modelslim_core.reference_runtime import load_quantized_model

    with torch.no_grad():
        reference = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)(input_ids=ids).logits
        logits = load_quantized_model(model_dir, out)(input_ids=ids).logits
    return ((logits - reference).norm() / reference.norm()).item()
