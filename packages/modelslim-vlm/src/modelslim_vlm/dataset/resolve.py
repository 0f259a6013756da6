"""From a `spec.dataset` value to checked samples: find the path, then pick the loader by what it is.

Name resolution: an absolute path is used as is; a relative path that exists from the working directory
wins next; otherwise the name is looked up in the calibration directories (the repository's `calib/` and
plugins'). Loaders, first match wins: a file named index.json / index.jsonl; a directory holding one of
them; then the deprecated forms (a directory of images with at most one json/jsonl file, or a plain
json/jsonl text file), which warn once per process.
"""

from __future__ import annotations

import logging
from pathlib import Path

from modelslim_core.calib.reference_sets import reference_set_error
from modelslim_core.calib.text import calib_roots
from modelslim_core.errors import DatasetError
from modelslim_vlm.dataset.index_file import INDEX_NAMES, index_in_directory, load_index
from modelslim_vlm.dataset.legacy import JSON_SUFFIXES, load_image_directory, load_text_file
from modelslim_vlm.dataset.sample import MediaSample

logger = logging.getLogger(__name__)

_warned: set[str] = set()


def _warn_once(kind: str, message: str, *args: object) -> None:
    if kind not in _warned:
        _warned.add(kind)
        logger.warning(message, *args)


def resolve_vlm_dataset(name: str) -> Path:
    """The file or directory `name` refers to."""
    candidate = Path(name).expanduser()
    if candidate.is_absolute():
        if candidate.exists():
            return candidate
        raise DatasetError(f"spec.dataset {name!r} does not exist.", "pass an index.jsonl, a folder holding one, or a short name under calib/.")
    if candidate.exists():
        return candidate.resolve()
    roots = calib_roots()
    for root in roots:
        if (root / name).exists():
            return root / name
    reference = reference_set_error(name)
    if reference is not None:
        raise reference
    tried = [str(Path.cwd() / name)] + [str(root / name) for root in roots]
    raise DatasetError(f"spec.dataset {name!r} was not found; looked for {', '.join(tried)}.",
                       "pass an absolute path, a path relative to the working directory, or a name under calib/ "
                       "(e.g. vlm_calib).")


def load_vlm_dataset(name: str, default_text: str) -> list[MediaSample]:
    """The samples of `spec.dataset`; media paths are checked to exist (decoding comes later, media.py)."""
    path = resolve_vlm_dataset(name)
    if path.is_file():
        if path.name in INDEX_NAMES:
            return load_index(path, default_text)
        if path.suffix.lower() in JSON_SUFFIXES:
            _warn_once("text", "spec.dataset %s is a plain text set (deprecated for %s): samples carry no media.",
                       path, "multimodal_vlm_modelslim_v1")
            return load_text_file(path)
        raise DatasetError(f"spec.dataset {str(path)!r} is neither an index.json/index.jsonl file nor a folder.",
                           "point it at an index.jsonl or at the folder that holds one.")
    index = index_in_directory(path)
    if index is not None:
        return load_index(index, default_text)
    _warn_once("images", "spec.dataset %s is an image folder without index.json/index.jsonl; this form is deprecated "
               "(images and text only). Write an index.jsonl instead.", path)
    return load_image_directory(path, default_text)
