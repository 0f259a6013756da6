"""Configs and runs shared by the SD tests."""

from __future__ import annotations

import copy
from pathlib import Path
from typing import Any

import yaml

from modelslim.app.quick_quant import QuantArgs, run_quant
from tests.sd.tiny_wan import TINY_MODEL_CONFIG
from tests.tiny_models import REPO

MODEL_TYPE = "Wan2.1"
STATIC_PRACTICE = REPO / "practices" / "wan2_1" / "wan2_1-w8a8-static.yaml"
DYNAMIC_PRACTICE = REPO / "practices" / "wan2_1" / "wan2_1-w8a8-dynamic.yaml"


def practice_config(practice: Path, **sd_config: Any) -> dict[str, Any]:
    """A shipped practice with the tiny generation settings (and any multimodal_sd_config overrides)."""
    config = yaml.safe_load(practice.read_text())
    sd = config["spec"]["multimodal_sd_config"]
    sd["model_config"] = dict(TINY_MODEL_CONFIG)
    sd.update(copy.deepcopy(sd_config))
    return config


def write_config(path: Path, config: dict[str, Any]) -> Path:
    path.write_text(yaml.safe_dump(config, sort_keys=False), encoding="utf-8")
    return path


def quantize(model: Path, save: Path, config: dict[str, Any]) -> Path:
    """Run `msmodelslim quant` in-process with `config` (written next to save) on the CPU."""
    save.parent.mkdir(parents=True, exist_ok=True)
    config_path = write_config(save.parent / f"{save.name}.yaml", config)
    return run_quant(QuantArgs(str(model), str(save), MODEL_TYPE, config_path=str(config_path), device="cpu"))
