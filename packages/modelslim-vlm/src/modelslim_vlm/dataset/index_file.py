"""Method 1, the recommended form: an `index.json` / `index.jsonl` file listing multimodal entries.

Strict on purpose: one bad entry aborts the run with its line (jsonl) or position (json) and field named,
because a silently dropped sample changes the calibration without anyone noticing.
Rules: `text` missing (or null) -> the spec's default_text; empty, whitespace-only or not a string -> error
(the reference quietly replaces "" by default_text, hiding entries whose prompt was lost).
`image` (.jpg/.jpeg/.png), `audio` (.wav/.mp3), `video` (.mp4) are optional non-empty strings, relative to
the index file's folder (absolute paths are accepted), with an accepted suffix, and must exist.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Any

from modelslim_core.errors import DatasetError
from modelslim_vlm.dataset.json_entries import read_entries
from modelslim_vlm.dataset.sample import MEDIA_FIELDS, MediaSample

logger = logging.getLogger(__name__)

INDEX_NAMES = ("index.json", "index.jsonl")
KNOWN_FIELDS = ("text", *MEDIA_FIELDS)

_FORMAT_HINT = (
    'each entry is a JSON object like {"image": "a.jpg", "audio": "a.wav", "video": "a.mp4", "text": "..."}; '
    "media paths are relative to the index file's folder."
)


def _text(entry: dict[str, Any], where: str, default_text: str) -> str:
    text = entry.get("text")
    if text is None:
        return default_text
    if not isinstance(text, str):
        raise DatasetError(f"{where}: field 'text' must be a string, got {type(text).__name__}.",
                           "write the prompt as a JSON string, or leave the field out to use spec.default_text.")
    if not text.strip():
        raise DatasetError(f"{where}: field 'text' is empty" + (" (only whitespace)." if text else "."),
                           "write a real prompt, or leave the field out to use spec.default_text.")
    return text.strip()


def _media(entry: dict[str, Any], field: str, where: str, folder: Path) -> Path | None:
    if field not in entry:
        return None
    value = entry[field]
    suffixes = MEDIA_FIELDS[field]
    if not isinstance(value, str) or not value.strip():
        raise DatasetError(f"{where}: field {field!r} must be a non-empty file path string, got {value!r}.",
                           f"give the {field} file's path relative to the index folder, or drop the field.")
    path = Path(value).expanduser()
    path = path if path.is_absolute() else folder / path
    if path.suffix.lower() not in suffixes:
        raise DatasetError(f"{where}: field {field!r} is {value!r}, which is not a {'/'.join(suffixes)} file.",
                           f"{field} files must end in {', '.join(suffixes)}; convert the file or drop the field.")
    if not path.is_file():
        raise DatasetError(f"{where}: field {field!r} names {str(path)!r}, which does not exist.",
                           "media paths are relative to the folder holding the index file; fix the path or add the file.")
    return path.resolve()


def load_index(path: Path, default_text: str) -> list[MediaSample]:
    """Every entry of `path` (named index.json or index.jsonl) as a checked MediaSample."""
    folder = path.parent
    samples = []
    ignored: set[str] = set()
    for place, entry in read_entries(path, strict=True, hint="index.json holds one object or a list of objects."):
        where = f"{path} {place}"
        if not isinstance(entry, dict):
            raise DatasetError(f"{where} is a JSON {type(entry).__name__}, not an object.", _FORMAT_HINT)
        unknown = [key for key in entry if key not in KNOWN_FIELDS]
        if unknown and not ignored:  # extra bookkeeping fields (ids, sources) are common; say once that they are unused
            ignored.update(unknown)
            logger.warning("%s: field(s) %s are not used (known fields: %s).", where, ", ".join(map(repr, unknown)),
                           ", ".join(KNOWN_FIELDS))
        media = {field: _media(entry, field, where, folder) for field in MEDIA_FIELDS}
        samples.append(MediaSample(text=_text(entry, where, default_text), where=where, **media))
    if not samples:
        raise DatasetError(f"the calibration index {path} has no entries.", _FORMAT_HINT)
    return samples


def index_in_directory(folder: Path) -> Path | None:
    """The folder's index file (None if it has none); both index.json and index.jsonl is an error."""
    present = [folder / name for name in INDEX_NAMES if (folder / name).is_file()]
    if len(present) > 1:
        raise DatasetError(f"{folder} holds both index.json and index.jsonl, so the calibration set is ambiguous.",
                           "keep one of the two files (or point spec.dataset at the one you mean).")
    return present[0] if present else None
