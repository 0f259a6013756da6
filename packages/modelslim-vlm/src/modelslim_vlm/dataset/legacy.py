"""The deprecated forms of `spec.dataset`, read best effort (bad items are skipped with a warning).

Method 2: a directory of images (top level, .jpg/.jpeg/.png), each paired with default_text, sorted by name.
Method 3: such a directory plus exactly one .json/.jsonl file (any name but index.*): entries
`{"image": "<file name in that directory>", "text": ...}`, `{"text": ...}` or plain strings, in file order;
images the file does not mention follow with default_text. A lone .json/.jsonl file that is not an index
is a text-only set (strings or {"text"} entries).
These forms only carry images and text; new sets should use an index file (index_file.py).
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modelslim_core.errors import DatasetError
from modelslim_vlm.dataset.json_entries import read_entries
from modelslim_vlm.dataset.sample import IMAGE_SUFFIXES, MediaSample

logger = logging.getLogger(__name__)

JSON_SUFFIXES = (".json", ".jsonl")


def _raw_items(path: Path) -> list[tuple[str, Any]]:
    return [(f"{path} {place}", item) for place, item in
            read_entries(path, strict=False, hint="fix the file, or convert the set to index.jsonl.")]


def _usable_text(value: Any) -> str | None:
    return value.strip() if isinstance(value, str) and value.strip() else None


def load_text_file(path: Path) -> list[MediaSample]:
    """A plain text set: strings or {"text"} objects; anything else is skipped."""
    samples = []
    for where, item in _raw_items(path):
        text = _usable_text(item if isinstance(item, str) else item.get("text") if isinstance(item, dict) else None)
        if text is None:
            logger.warning("%s has no usable text; skipped.", where)
            continue
        samples.append(MediaSample(text=text, where=where))
    if not samples:
        raise DatasetError(f"{path} holds no usable text entries (strings or objects with a 'text' field).",
                           "a VLM calibration set is best written as index.jsonl with image/audio/video and text.")
    return samples


def _images(folder: Path) -> list[Path]:
    return sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in IMAGE_SUFFIXES)


def _from_json(folder: Path, json_file: Path, images: dict[str, Path], default_text: str) -> tuple[list[MediaSample], set[str]]:
    samples: list[MediaSample] = []
    used: set[str] = set()
    for where, item in _raw_items(json_file):
        if isinstance(item, str) or (isinstance(item, dict) and "image" not in item):
            text = _usable_text(item if isinstance(item, str) else item.get("text"))
            if text is None:
                logger.warning("%s has no usable text; skipped.", where)
            else:
                samples.append(MediaSample(text=text, where=where))
            continue
        if not isinstance(item, dict):
            logger.warning("%s is neither a string nor an object; skipped.", where)
            continue
        name = item["image"]
        if not isinstance(name, str) or name not in images:
            logger.warning("%s: image %r is not an image file at the top of %s; skipped.", where, name, folder)
            continue
        text = _usable_text(item.get("text"))
        if text is None and "text" in item:
            logger.warning("%s: text is empty or not a string; using default_text.", where)
        samples.append(MediaSample(text=text or default_text, image=images[name].resolve(), where=where))
        used.add(name)
    return samples, used


def load_image_directory(folder: Path, default_text: str) -> list[MediaSample]:
    """Methods 2 and 3: a directory of images, optionally with one json/jsonl file of prompts."""
    json_files = sorted(p for p in folder.iterdir() if p.is_file() and p.suffix.lower() in JSON_SUFFIXES)
    if len(json_files) > 1:
        raise DatasetError(f"{folder} holds {len(json_files)} json/jsonl files ({', '.join(p.name for p in json_files)}); "
                           "an image directory may have at most one.",
                           "keep one prompt file, or write an index.jsonl (recommended).")
    images = {p.name: p for p in _images(folder)}
    if not images:
        raise DatasetError(f"{folder} holds no index.json/index.jsonl and no .jpg/.jpeg/.png image.",
                           "put an index.jsonl in the folder (see README 'Multimodal calibration sets').")
    samples: list[MediaSample] = []
    used: set[str] = set()
    if json_files:
        samples, used = _from_json(folder, json_files[0], images, default_text)
    samples += [MediaSample(text=default_text, image=p.resolve(), where=str(p)) for n, p in images.items() if n not in used]
    return samples
