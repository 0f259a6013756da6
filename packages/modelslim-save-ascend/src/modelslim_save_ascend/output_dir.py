"""The output directory's life cycle: clear our stale files, copy the model's side files, commit atomically.

vLLM loads every top-level `*.safetensors` in a checkpoint directory, so stale shards of an earlier run
must go; but files we did not write are never deleted: a foreign `*.safetensors` in save_path is an error.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

from modelslim_core.errors import SaveError
from modelslim_core.io.permissions import secure

logger = logging.getLogger(__name__)

#: What `msmodelslim eval` writes beside a checkpoint; it describes that checkpoint only, so it goes with it.
EVAL_REPORT_NAME = "eval_report.json"
EVAL_PLOT_NAME = "eval_layer_error.png"

#: Model files copied next to the weights (tokenizer, configs, chat templates, remote code).
SIDE_FILE_SUFFIXES = (".json", ".py", ".txt", ".jinja", ".model", ".tiktoken")


def clear_previous_output(save_path: Path, weights_prefix: str, description_pattern: str) -> None:
    """Remove our own earlier output; refuse when other weight files are present.

    `description_pattern` is a glob: formats whose description name carries the quant type match them all.
    """
    foreign = [
        p.name for p in save_path.glob("*.safetensors") if not p.name.startswith(weights_prefix)
    ]
    if foreign:
        raise SaveError(
            f"save_path {str(save_path)!r} already holds weight files that ModelSlim did not write: {', '.join(sorted(foreign))}.",
            "serving engines would load them together with the quantized weights; choose an empty save_path.",
        )
    for description in save_path.glob(description_pattern):  # first: the output stops looking complete
        description.unlink()
    for stale in (*save_path.glob(f"{weights_prefix}*.safetensors"), *save_path.glob(f".{weights_prefix}*.partial")):
        stale.unlink(missing_ok=True)
    for name in (f"{weights_prefix}.safetensors.index.json", EVAL_REPORT_NAME, EVAL_PLOT_NAME):
        (save_path / name).unlink(missing_ok=True)


def copy_side_files(
    model_path: Path, save_path: Path, skip: set[str], suffixes: tuple[str, ...] = SIDE_FILE_SUFFIXES
) -> list[str]:
    """Copy tokenizer/config/code files (names ending in `suffixes`) from a model directory, never weight indexes.

    Weight indexes (`*.safetensors.index.json`, `*.bin.index.json`) describe the source's shards, not ours.
    The reference skips every `*index.json`, which would also drop a diffusers pipeline's model_index.json.
    """
    copied = []
    for source in sorted(model_path.iterdir()):
        name = source.name
        if not source.is_file() or name in skip or name.endswith(".index.json") or not name.endswith(suffixes):
            continue
        shutil.copyfile(source, save_path / name)
        secure(save_path / name)
        copied.append(name)
    return copied


def strip_quantization_config(config_file: Path) -> None:
    """Drop `quantization_config` (top level and text_config) so engines do not pick another method."""
    if not config_file.is_file():
        return
    config = json.loads(config_file.read_text(encoding="utf-8"))
    changed = config.pop("quantization_config", None) is not None
    if isinstance(config.get("text_config"), dict):
        changed |= config["text_config"].pop("quantization_config", None) is not None
    if changed:
        write_json_atomic(config_file, config, indent=2)


def write_json_atomic(path: Path, data: Any, indent: int) -> None:
    """Write JSON under a temporary name and rename it into place, so readers never see half a file."""
    tmp = path.with_name(f".{path.name}.partial")
    tmp.write_text(json.dumps(data, indent=indent, ensure_ascii=False), encoding="utf-8")
    secure(tmp)
    os.replace(tmp, path)
