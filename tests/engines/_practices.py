"""Shipped practices on tiny models of their families, for the engine-conformance tests."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from pathlib import Path

import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from tests.families._tiny import make_family_model
from tests.tiny_models import REPO, make_tiny_model

PRACTICES = REPO / "practices"


def _tiny(arch: str) -> Callable[[Path], Path]:
    return lambda target: make_tiny_model(target, arch)


def _family(kind: str) -> Callable[[Path], Path]:
    return lambda target: make_family_model(target, kind)


#: practices/ folder -> (tiny model builder, --model_type).
FAMILIES: dict[str, tuple[Callable[[Path], Path], str]] = {
    "default": (_tiny("mistral"), "Mistral-7B-Instruct-v0.3"),
    "llama": (_tiny("llama"), "Llama-3.1-8B-Instruct"),
    "qwen2": (_tiny("qwen2"), "Qwen2-7B"),
    "qwen2_5": (_tiny("qwen2"), "Qwen2.5-7B-Instruct"),
    "qwen3": (_tiny("qwen3"), "Qwen3-8B"),
    "qwen3_moe": (_tiny("qwen3_moe"), "Qwen3-30B-A3B"),
    "deepseek_v3": (_tiny("deepseek_v3"), "DeepSeek-V3"),
    "deepseek_v3_2": (_tiny("deepseek_v32"), "DeepSeek-V3.2-Exp"),
    "kimi_k2": (_tiny("deepseek_v3"), "Kimi-K2-Thinking"),
    "glm4_moe": (_family("glm4_moe"), "GLM-4.7"),
    "glm4_moe_lite": (_family("glm4_moe_lite"), "GLM-4.7-Flash"),
    "glm_5": (_family("glm_moe_dsa"), "GLM-5"),
    "longcat_flash": (_family("longcat_flash"), "LongCat-Flash-Chat"),
    "minimax_m2": (_family("minimax_m2"), "MiniMax-M2.7"),
    "qwen3_next": (_family("qwen3_next"), "Qwen3-Next-80B-A3B-Instruct"),
}
def _num_layers(model_dir: Path) -> int:
    config = json.loads((model_dir / "config.json").read_text())
    return int(config.get("num_hidden_layers") or config.get("num_layers"))


def tiny_practice(practice: str, model_dir: Path, dataset: Path, target: Path) -> Path:
    """The shipped practice on a tiny model: its layer-index rules name the tiny model's last layer, its dataset
    is a tiny one; everything else (schemes, saver) is the practice's own."""
    last = _num_layers(model_dir) - 1
    text = (PRACTICES / practice).read_text(encoding="utf-8")
    text = re.sub(r"model\.layers\.(\d+)\.", lambda m: f"model.layers.{min(int(m[1]), last)}.", text)
    data = yaml.safe_load(text)
    if "dataset" in data["spec"]:
        data["spec"]["dataset"] = str(dataset)
    target.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return target


def run_practice(practice: str, family_model, dataset: Path, tmp_path: Path, tags: list[str] | None = None) -> Path:
    folder = practice.split("/")[0]
    model_dir = family_model(folder)
    config = tiny_practice(practice, model_dir, dataset, tmp_path / "practice.yaml")
    return run_quant(QuantArgs(str(model_dir), str(tmp_path / "out"), FAMILIES[folder][1], config_path=str(config),
                               device="cpu", yes=True, tags=tags))
