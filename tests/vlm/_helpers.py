"""Runs and comparisons shared by the VLM tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.models.resolve import create_adapter
from modelslim_vlm.dataset import load_vlm_dataset
from modelslim_vlm.dataset.media import decode_sample
from tests.tiny_models import REPO

MODEL_TYPES = {
    "qwen2_5_vl": "Qwen2.5-VL-7B-Instruct",
    "qwen3_vl": "Qwen3-VL-8B-Instruct",
    "qwen3_vl_moe": "Qwen3-VL-30B-A3B-Instruct",
    "qwen2_5_omni_thinker": "Qwen2.5-Omni-7B",
}


def practice(family: str) -> Path:
    return next((REPO / "practices" / family).glob("*-w8a8.yaml"))


def practice_config(family: str, dataset: Path, **spec: Any) -> dict[str, Any]:
    config = yaml.safe_load(practice(family).read_text())
    config["spec"]["dataset"] = str(dataset)
    config["spec"].update(spec)
    return config


def quantize(family: str, model: Path, save: Path, config: dict[str, Any], device: str = "cpu") -> Path:
    save.parent.mkdir(parents=True, exist_ok=True)
    config_path = save.parent / f"{save.name}.yaml"
    config_path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return run_quant(QuantArgs(str(model), str(save), MODEL_TYPES[family], config_path=str(config_path), device=device))


def multimodal_prompt(family: str, model: Path, index: Path) -> dict[str, torch.Tensor]:
    """The processor inputs of the set's richest entry (image, video and, for Omni, audio)."""
    adapter = create_adapter(MODEL_TYPES[family], model, False)
    sample = adapter.usable_sample(load_vlm_dataset(str(index), "Describe.")[3])
    return adapter.build_inputs(decode_sample(sample, adapter.audio_sampling_rate))


def relative_error(reference: torch.Tensor, other: torch.Tensor) -> float:
    return ((reference - other).norm() / reference.norm()).item()
