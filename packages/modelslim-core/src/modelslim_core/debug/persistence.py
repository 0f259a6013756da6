"""`save_path/debug_info/`: debug records as JSON, their tensors in one safetensors file, and the loader.

`debug_info.json` is `{namespace: {key: value}}` (indent 4). A tensor inside a value is replaced by
`{"_type": "tensor", "_file": "debug_info.safetensors", "_key": K}` where K is `<namespace>/<key>` (plus
`[i]` / `.<field>` for tensors inside lists and dicts): keys are unique across namespaces and readable,
and a tensor recorded under several keys is stored once, every reference naming the first key. (The
reference numbers tensors with a counter that restarts per namespace and is off by one, so later
namespaces overwrite earlier tensors and references miss; neither is reproduced.) Values that are not
JSON types are written as `str(value)`.
"""

from __future__ import annotations

import json
import math
import os
from pathlib import Path
from typing import Any

import torch
from safetensors.torch import load_file, save_file

from modelslim_core.errors import CheckpointError
from modelslim_core.io.atomic import partial_path, write_json_file_atomic

DEBUG_DIR = "debug_info"
JSON_NAME = "debug_info.json"
TENSORS_NAME = "debug_info.safetensors"


def _encode(value: Any, key: str, tensors: dict[str, torch.Tensor], stored: dict[int, str]) -> Any:
    if isinstance(value, torch.Tensor):
        if id(value) not in stored:
            stored[id(value)] = key
            tensors[key] = value
        return {"_type": "tensor", "_file": TENSORS_NAME, "_key": stored[id(value)]}
    if isinstance(value, dict):
        return {str(k): _encode(v, f"{key}.{k}", tensors, stored) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_encode(v, f"{key}[{i}]", tensors, stored) for i, v in enumerate(value)]
    if value is None or isinstance(value, (bool, int, str)):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else str(value)
    return str(value)


def write_debug_info(records: dict[str, dict[str, Any]], directory: Path) -> Path:
    """Write `records` (as collected by the Recorder) into `directory`; returns the JSON path."""
    directory.mkdir(parents=True, exist_ok=True)
    tensors: dict[str, torch.Tensor] = {}
    stored: dict[int, str] = {}
    document = {
        namespace: {key: _encode(value, f"{namespace}/{key}", tensors, stored) for key, value in entries.items()}
        for namespace, entries in records.items()
        if entries
    }
    tensor_file = directory / TENSORS_NAME
    save_file({k: t.contiguous() for k, t in tensors.items()}, str(partial_path(tensor_file)))
    os.replace(partial_path(tensor_file), tensor_file)
    json_file = directory / JSON_NAME
    write_json_file_atomic(json_file, document, indent=4)  # last: the JSON names tensors the file now holds
    return json_file


def _decode(value: Any, tensors: dict[str, torch.Tensor], where: str) -> Any:
    if isinstance(value, dict):
        if value.get("_type") == "tensor":
            key = value.get("_key")
            if key not in tensors:
                raise CheckpointError(
                    f"{JSON_NAME}: {where} refers to tensor {key!r}, which {TENSORS_NAME} does not hold.",
                    "the two files come from different runs; rerun with --debug.",
                )
            return tensors[key]
        return {k: _decode(v, tensors, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_decode(v, tensors, f"{where}[{i}]") for i, v in enumerate(value)]
    return value


def load_debug_info(path: Path | str) -> dict[str, dict[str, Any]]:
    """Read `debug_info/` (or the save_path holding it) back: `{namespace: {key: value}}` with real tensors."""
    directory = Path(path)
    if (directory / DEBUG_DIR).is_dir():
        directory = directory / DEBUG_DIR
    json_file, tensor_file = directory / JSON_NAME, directory / TENSORS_NAME
    if not json_file.is_file():
        raise CheckpointError(f"{json_file} does not exist.", "run `msmodelslim quant` with --debug to produce it.")
    document = json.loads(json_file.read_text(encoding="utf-8"))
    tensors = load_file(str(tensor_file)) if tensor_file.is_file() else {}
    return {namespace: _decode(entries, tensors, namespace) for namespace, entries in document.items()}
