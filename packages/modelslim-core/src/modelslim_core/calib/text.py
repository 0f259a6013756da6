"""Text calibration sets for modelslim_v1.

`spec.dataset` is an absolute path, a path relative to the working directory, or a short name looked up
in the calibration directories (the repository's `calib/` and any plugin's, via the `modelslim.calib_dirs`
entry-point group). `.jsonl`: one JSON object per line, the text in `inputs_pretokenized` (or `text`,
`prompt`); blank lines are skipped. `.json`: an array of strings (or of such objects).
"""

from __future__ import annotations

import json
import logging
from pathlib import Path
from typing import Any

from modelslim_core import registry
from modelslim_core.calib.reference_sets import reference_set_error
from modelslim_core.errors import DatasetError

logger = logging.getLogger(__name__)

TEXT_FIELDS = ("inputs_pretokenized", "text", "prompt")


def calib_roots() -> list[Path]:
    """Directories registered by plugins (and the meta-package) for short dataset names."""
    roots: list[Path] = []
    for ep in registry.entry_points_of(registry.CALIB_DIRS):
        try:
            provided = ep.load()()
        except Exception as exc:  # a broken plugin must not break runs that don't use it
            logger.warning("calibration directory plugin %r failed: %s", ep.name, exc)
            continue
        for item in provided if isinstance(provided, (list, tuple)) else [provided]:
            if item and Path(item).is_dir():
                roots.append(Path(item))
    return roots


def resolve_dataset(name: str) -> Path:
    """The file a `spec.dataset` value refers to."""
    candidate = Path(name).expanduser()
    if candidate.is_absolute() or candidate.exists():
        if candidate.is_file():
            return candidate
        raise DatasetError(f"dataset {name!r} does not exist or is not a file.", "pass a .jsonl or .json file.")
    searched = calib_roots()
    for root in searched:
        if (root / name).is_file():
            return root / name
    reference = reference_set_error(name)
    if reference is not None:
        raise reference
    available = sorted({p.name for root in searched for p in root.iterdir() if p.suffix in (".jsonl", ".json")})
    raise DatasetError(
        f"dataset {name!r} was not found (as a path, or in {', '.join(map(str, searched)) or 'no calibration directory'}).",
        f"use a path to a .jsonl/.json file or one of: {', '.join(available) or 'none'}.",
    )


def _text_of(item: Any, where: str) -> str:
    if isinstance(item, str):
        text = item
    elif isinstance(item, dict):
        text = next((item[k] for k in TEXT_FIELDS if k in item), None)
        if text is None:
            raise DatasetError(f"{where} has none of the fields {', '.join(TEXT_FIELDS)}.", "add the sample text as `inputs_pretokenized`.")
    else:
        raise DatasetError(f"{where} must be a JSON object or string, got {type(item).__name__}.", "one sample per entry.")
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{where} has an empty or non-string text.", "every sample needs non-empty text.")
    return text


def jsonl_objects(path: Path) -> list[tuple[int, Any]]:
    """(line number, parsed value) of every non-blank line of a JSON Lines file; invalid JSON is an error."""
    items = []
    for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), start=1):
        if not line.strip():
            continue
        try:
            items.append((number, json.loads(line)))
        except ValueError as exc:
            raise DatasetError(f"{path} line {number} is not valid JSON: {exc}.", "write one JSON object per line.") from None
    return items


def _read_jsonl(path: Path) -> list[str]:
    return [_text_of(item, f"{path} line {number}") for number, item in jsonl_objects(path)]


def _read_json(path: Path) -> list[str]:
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except ValueError as exc:
        raise DatasetError(f"{path} is not valid JSON: {exc}.", "a .json dataset is one JSON array.") from None
    if not isinstance(data, list):
        raise DatasetError(f"{path} must hold a JSON array of samples.", "wrap the samples in [ ... ].")
    return [_text_of(item, f"{path} entry {index}") for index, item in enumerate(data)]


def load_texts(name: str) -> list[str]:
    """All calibration texts of a dataset, in file order."""
    path = resolve_dataset(name)
    try:
        texts = _read_json(path) if path.suffix == ".json" else _read_jsonl(path)
    except UnicodeDecodeError:
        raise DatasetError(f"{path} is not UTF-8 text.", "save the dataset as UTF-8.") from None
    if not texts:
        raise DatasetError(f"dataset {str(path)!r} holds no samples.", "add at least one sample.")
    logger.info("Calibration dataset %s: %d samples.", path, len(texts))
    return texts
