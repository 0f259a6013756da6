"""Checks on --model_path and --save_path, done before any work.

The model directory is never written to: the output may not be the model directory or lie inside it.
"""

from __future__ import annotations

from pathlib import Path

from modelslim_core.errors import ModelError, UsageError


def check_model_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise ModelError(f"model_path {text!r} does not exist.", "pass the local directory of the model to quantize.")
    if not path.is_dir():
        raise ModelError(f"model_path {text!r} is not a directory.", "pass the directory that holds config.json.")
    if not any(path.iterdir()):
        raise ModelError(f"model_path {text!r} is empty.", "pass the directory that holds config.json and the weights.")
    return path.resolve()  # which files must be there (config.json, model_index.json) is the adapter's check


def check_save_path(text: str, model_path: Path) -> Path:
    path = Path(text).expanduser().resolve()
    if path == model_path or model_path in path.parents:
        raise UsageError(
            f"save_path {text!r} is the model directory or inside it; ModelSlim never writes into --model_path.",
            "choose a save_path outside the model directory.",
        )
    if path.exists() and not path.is_dir():
        raise UsageError(f"save_path {text!r} exists and is not a directory.", "choose a directory path.")
    return path
