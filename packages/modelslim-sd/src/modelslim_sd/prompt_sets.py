"""`spec.dataset` of multimodal_sd_modelslim_v1: the prompt set the calibration generations run on.

A generation model is calibrated by running its own pipeline, once per prompt; `spec.dataset` names where
those prompts (and, for image-to-video, the first frames) come from: a prompt set ModelSlim ships
(`calib/sd_prompts/<name>/index.jsonl`, under the reference's names `wan2_2_t2v`, `wan2_2_i2v`,
`wan2_2_ti2v`, `hunyuanvideo`; plugins add theirs through the `modelslim.calib_dirs` entry points), or a
path to such a `.jsonl` file or to a directory holding `index.jsonl`. One JSON object per line:
`{"text": "...", "image": "frame.jpg"}`, `image` optional and relative to the file. Everything is checked
when the YAML is loaded; the prompts then take the place of `multimodal_sd_config.inference_config.prompt`
(giving both is refused). `mix_calib.jsonl`, the reference's default `dataset` for every apiversion, is a
text set for language models: it is accepted with a warning and not used.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from modelslim_core.calib.text import calib_roots, jsonl_objects
from modelslim_core.errors import ConfigError, DatasetError
from modelslim_core.protocol.validation import suggestion

logger = logging.getLogger(__name__)

PROMPT_SETS_DIR = "sd_prompts"
INDEX = "index.jsonl"
#: The reference's default `spec.dataset` (a language-model text set): accepted, warned about, not used.
REFERENCE_DEFAULT = "mix_calib.jsonl"
TEXT_FIELDS = ("text", "prompt")


@dataclass(frozen=True)
class PromptSet:
    """The samples of one prompt set: each generation's prompt and its conditioning image (absolute path)."""

    path: Path
    prompts: tuple[str, ...]
    images: tuple[str | None, ...]


def shipped_prompt_sets() -> dict[str, Path]:
    """Prompt set name -> its index.jsonl, over every calibration directory (the first one wins)."""
    found: dict[str, Path] = {}
    for root in calib_roots():
        base = root / PROMPT_SETS_DIR
        for directory in sorted(base.iterdir()) if base.is_dir() else ():
            if (directory / INDEX).is_file():
                found.setdefault(directory.name, directory / INDEX)
    return found


def _format_hint(shipped: dict[str, Path]) -> str:
    return (f"use a prompt set ModelSlim ships ({', '.join(shipped) or 'none found'}), or a path to a .jsonl file "
            f'(one {{"text": ..., "image": ...}} object per line, image optional) or to a directory holding {INDEX}.')


def resolve_prompt_set(value: str, where: str) -> Path:
    """The index file `spec.dataset` refers to: a shipped set's name, or a path."""
    shipped = shipped_prompt_sets()
    candidate = Path(value).expanduser()
    if candidate.is_absolute() or candidate.exists():
        index = candidate / INDEX if candidate.is_dir() else candidate
        if index.is_file() and index.suffix == ".jsonl":
            return index
        raise ConfigError(f"{where} {value!r} is neither a .jsonl prompt file nor a directory holding {INDEX}.",
                          _format_hint(shipped))
    if value in shipped:
        return shipped[value]
    raise ConfigError(
        f"{where} {value!r} is not a prompt set ModelSlim ships{suggestion(value, list(shipped))}, nor an "
        "existing path.", _format_hint(shipped))


def _sample(item: Any, index: Path, where: str) -> tuple[str, str | None]:
    if not isinstance(item, dict):
        raise DatasetError(f"{where} must be a JSON object, got {type(item).__name__}.",
                           '{"text": "a prompt", "image": "optional/first_frame.jpg"}')
    text = next((item[key] for key in TEXT_FIELDS if key in item), None)
    if not isinstance(text, str) or not text.strip():
        raise DatasetError(f"{where} has no prompt: `text` must be a non-empty string.", "add the prompt as `text`.")
    image = item.get("image")
    if image is None:
        return text, None
    path = (index.parent / str(image)).expanduser()
    if not isinstance(image, str) or not path.is_file():
        raise DatasetError(f"{where}: image {image!r} is not a file (paths are relative to {index.parent}).",
                           "fix the path or drop the image field.")
    return text, str(path.resolve())


def load_prompt_set(value: str, where: str) -> PromptSet:
    """Resolve and read `spec.dataset` (before any model is loaded)."""
    index = resolve_prompt_set(value, where)
    try:
        samples = [_sample(item, index, f"{index} line {number}") for number, item in jsonl_objects(index)]
    except UnicodeDecodeError:
        raise DatasetError(f"{index} is not UTF-8 text.", "save the prompt set as UTF-8.") from None
    if not samples:
        raise DatasetError(f"{where}: {index} holds no prompts.", "add at least one line.")
    logger.info("Prompt set %s: %d prompts (%d with an image).", index, len(samples), sum(s[1] is not None for s in samples))
    return PromptSet(index, tuple(s[0] for s in samples), tuple(s[1] for s in samples))


def read_dataset_field(value: str | None, where: str) -> PromptSet | None:
    """`spec.dataset` as written -> the prompt set, or None (absent, or the reference's language-model default)."""
    if value is None:
        return None
    if value == REFERENCE_DEFAULT:
        logger.warning("%s %r is a text set for language models (the reference's default), not a prompt set; it is "
                       "not used: the prompts come from multimodal_sd_config.model_config (inference_config) prompt, "
                       "or name a prompt set here (%s).", where, value, ", ".join(shipped_prompt_sets()))
        return None
    return load_prompt_set(value, where)


def with_prompt_set(settings_class: type, raw: dict[str, Any], inference_path: str, prompt_set: PromptSet | None,
                    where: str) -> dict[str, Any]:
    """The raw inference settings with the prompt set's prompts (and first frames, where the model takes them)."""
    if prompt_set is None:
        return raw
    fields = getattr(settings_class, "model_fields", {})
    if "prompt" not in fields:
        raise ConfigError(f"{where} names a prompt set, but this model type runs no generation to calibrate "
                          "(data-free processors only).", f"remove {where}.")
    if "prompt" in raw:
        raise ConfigError(f"{where} and {inference_path}.prompt both give the calibration prompts.",
                          "keep one of them.")
    merged = {**raw, "prompt": list(prompt_set.prompts)}
    if not any(prompt_set.images):
        return merged
    # the settings field taking one image per prompt: `image` unless the model names another (PROMPT_IMAGE_FIELD)
    field = getattr(settings_class, "PROMPT_IMAGE_FIELD", "image")
    if field not in fields or getattr(settings_class, "image_required", None) is False:
        logger.warning("%s: the images of %s are not used (this model type generates from text).", where, prompt_set.path)
        return merged
    if field in raw:
        raise ConfigError(f"{where} has images and {inference_path}.{field} is set too.", "keep one of them.")
    if not all(prompt_set.images):
        raise ConfigError(f"{where}: {prompt_set.path} gives an image for some prompts but not for others; a run "
                          "generates either all from images or all from text.",
                          "give every line an image, or none.")
    merged[field] = list(prompt_set.images)
    return merged
