"""Atomic file writes: write under a hidden temporary name, then rename into place, so a reader (or a killed
run) never sees half a file."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from modelslim_core.io.permissions import secure


def partial_path(path: Path) -> Path:
    return path.with_name(f".{path.name}.partial")


def write_text_atomic(path: Path, text: str) -> None:
    tmp = partial_path(path)
    tmp.write_text(text, encoding="utf-8")
    secure(tmp)
    os.replace(tmp, path)


def write_json_file_atomic(path: Path, data: Any, indent: int) -> None:
    write_text_atomic(path, json.dumps(data, indent=indent, ensure_ascii=False))
