"""Inference settings every generation family shares: prompts, an optional conditioning image, a seed.

The family classes add the reference's own key names (Wan2.2's `sample_steps`, HunyuanVideo's
`infer_steps`, FLUX's `num_inference_steps` ...) and say how they map onto the diffusers pipeline call.
The seed must be >= 0: a random seed would make calibration unrepeatable and its cached data unverifiable.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Any

from pydantic import Field, field_validator

from modelslim_core.protocol.validation import StrictModel

from modelslim_sd.wan2_1.inference_config import check_prompts

DEFAULT_PROMPT = (
    "A red fox trots through fresh snow between tall pine trees at sunrise, its breath visible in the cold "
    "air, while the camera slowly follows it at ground level."
)
_SIZE = re.compile(r"^\s*(\d+)\s*\*\s*(\d+)\s*$")


def parse_size(value: str, multiple: int) -> tuple[int, int]:
    """'W*H' -> (width, height), both positive multiples of `multiple`; ValueError otherwise."""
    match = _SIZE.match(value)
    if not match:
        raise ValueError(f"size must be 'W*H' with integer width and height, e.g. '832*480', got {value!r}")
    width, height = int(match[1]), int(match[2])
    if width <= 0 or height <= 0 or width % multiple or height % multiple:
        raise ValueError(f"size {value!r}: width and height must be positive multiples of {multiple}")
    return width, height


class PromptSettings(StrictModel):
    """The prompts of the calibration generations (one generation per prompt, seeded seed + index)."""

    prompt: str | list[str] = Field(default=DEFAULT_PROMPT, description="a non-empty string or list of strings")

    _check_prompt = field_validator("prompt")(classmethod(lambda cls, value: check_prompts(value)))

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)


def check_image_paths(value: str | list[str] | None) -> str | list[str] | None:
    """Every conditioning image must be an existing file (checked before any model is loaded)."""
    paths = [] if value is None else [value] if isinstance(value, str) else value
    for text in paths:
        if not Path(text).expanduser().is_file():
            raise ValueError(f"image {text!r} is not a file")
    return value


def load_images(value: str | list[str] | None) -> list[Any]:
    """The conditioning images as RGB PIL images (an empty list when there are none)."""
    from PIL import Image

    paths = [] if value is None else [value] if isinstance(value, str) else value
    return [Image.open(Path(text).expanduser()).convert("RGB") for text in paths]
