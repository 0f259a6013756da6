"""Reading the entries of a .json / .jsonl calibration file, for the strict index and the lenient legacy loaders."""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from modelslim_core.errors import DatasetError

logger = logging.getLogger(__name__)


def read_entries(path: Path, strict: bool, hint: str) -> list[tuple[str, Any]]:
    """(place, raw entry) pairs: 'line N' for .jsonl (blank lines skipped), 'entry N' for .json (an object or
    a list). A bad .jsonl line is an error when `strict`, else skipped with a warning; unreadable files and
    invalid .json are always errors (`hint` says how to fix them)."""
    try:
        content = path.read_text(encoding="utf-8")
    except (OSError, UnicodeDecodeError) as exc:
        raise DatasetError(f"cannot read {path}: {exc}.", "check the file's permissions and encoding (UTF-8).") from None
    if path.suffix.lower() == ".jsonl":
        entries = []
        for number, line in enumerate(content.splitlines(), start=1):
            if not line.strip():
                continue
            try:
                entries.append((f"line {number}", json.loads(line)))
            except ValueError as exc:
                if strict:
                    raise DatasetError(f"{path} line {number} is not valid JSON: {exc}.", "write one JSON object per line.") from None
                logger.warning("%s line %d is not valid JSON; skipped.", path, number)
        return entries
    try:
        data = json.loads(content)
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}.", hint) from None
    items = data if isinstance(data, list) else [data]
    return [(f"entry {i + 1}", item) for i, item in enumerate(items)]
