"""`msmodelslim quant` with a `modelslim_convert` config: no model code, so no --model_type needed.

A conversion reads the checkpoint's files only (docs/convert.md). Its adapter is the generic one, which
reads config.json and nothing else; the exported config is named `convert_best_practice.yaml` when no
--model_type is given.
"""

from __future__ import annotations

from pathlib import Path

from modelslim_core.errors import UsageError
from modelslim_core.models.base import ModelAdapter
from modelslim_core.models.resolve import create_adapter
from modelslim_core.protocol.config import CONVERT
from modelslim_core.protocol.yaml_io import load_yaml_file

#: The model type of a conversion run without --model_type.
CONVERT_MODEL_TYPE = "convert"


def is_convert_config(config_path: str | None) -> bool:
    if not config_path:
        return False
    raw = load_yaml_file(config_path)
    return isinstance(raw, dict) and raw.get("apiversion") == CONVERT


def run_model_type(model_type: str | None, config_path: str | None) -> str:
    """--model_type, `convert` for a conversion without one; a usage error when any other run lacks it."""
    if model_type:
        return model_type
    if is_convert_config(config_path):
        return CONVERT_MODEL_TYPE
    raise UsageError("--model_type is required (only a `apiversion: modelslim_convert` --config_path runs without it).",
                     "pass the model's name, e.g. --model_type Qwen2.5-7B-Instruct.")


def adapter_for_run(model_type: str, model_path: Path, config_path: str | None, trust_remote_code: bool) -> ModelAdapter:
    """The generic adapter for a conversion (it reads config.json only), the family's adapter otherwise."""
    if is_convert_config(config_path):
        return ModelAdapter(model_type, model_path, trust_remote_code)
    return create_adapter(model_type, model_path, trust_remote_code)
