"""Wan2.1 inference settings (`multimodal_sd_config.model_config`): what the calibration generation runs.

Names follow the reference's Wan2.1 adapter where it has them (prompt, frame_num, size, sample_steps, task,
offload_model); `negative_prompt`, `guidance` and `seed` name the pipeline's other inputs. Differences from
the reference, on purpose: the seed defaults to 42 and must be >= 0 (a random seed would make calibration
unrepeatable and its cached data unverifiable), and any size that Wan can patchify is accepted — the
official sizes of the task are only recommended (tiny test models use 32*32).
"""

from __future__ import annotations

import logging
import re
from typing import Literal

from pydantic import Field, field_validator

from modelslim_core.protocol.validation import StrictModel


def check_prompts(value: str | list[str]) -> str | list[str]:
    """A calibration prompt field: a non-empty string, or a non-empty list of non-empty strings."""
    prompts = [value] if isinstance(value, str) else value
    if not prompts or any(not p.strip() for p in prompts):
        raise ValueError("prompt must be a non-empty string or a non-empty list of non-empty strings")
    return value

logger = logging.getLogger(__name__)

#: Sizes the Wan2.1 release supports per task, first = default.
TASK_SIZES = {
    "t2v-14B": ("1280*720", "720*1280", "832*480", "480*832"),
    "t2v-1.3B": ("832*480", "480*832"),
}
#: Width and height must be multiples of the VAE's spatial factor (8) times the DiT's patch size (2).
SIZE_MULTIPLE = 16
#: Latent frames are 1 + (frames - 1) / 4, so frame counts are 4n+1.
FRAME_STEP = 4
DEFAULT_PROMPT = (
    "A red fox trots through fresh snow between tall pine trees at sunrise, its breath visible in the cold "
    "air, while the camera slowly follows it at ground level."
)
_SIZE = re.compile(r"^\s*(\d+)\s*\*\s*(\d+)\s*$")


class WanInferenceConfig(StrictModel):
    """The settings of the one float generation whose transformer calls become the calibration data."""

    prompt: str | list[str] = Field(default=DEFAULT_PROMPT, description="a non-empty string or list of strings")
    negative_prompt: str = Field(default="", description="a string, used when guidance > 1")
    frame_num: int = Field(default=81, ge=1, description="integer 4n+1 >= 1, default 81")
    size: str | None = Field(
        default=None, description="'W*H', multiples of 16; default: the task's first official size"
    )
    sample_steps: int = Field(default=50, ge=1, description="integer >= 1, default 50")
    guidance: float = Field(default=5.0, ge=0, description="number >= 0, default 5.0; > 1 adds the unconditional branch")
    seed: int = Field(default=42, ge=0, description="integer >= 0, default 42")
    task: Literal["t2v-14B", "t2v-1.3B"] = Field(default="t2v-14B", description="t2v-14B | t2v-1.3B")
    offload_model: bool = Field(
        default=True, description="true | false: free the text encoder before the transformer is loaded"
    )

    _check_prompt = field_validator("prompt")(classmethod(lambda cls, value: check_prompts(value)))

    @field_validator("frame_num")
    @classmethod
    def _check_frames(cls, value: int) -> int:
        if (value - 1) % FRAME_STEP:
            raise ValueError(f"frame_num must be 4n+1 (1, 5, ..., 81, 121), got {value}")
        return value

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: str | None) -> str | None:
        if value is None:
            return value
        match = _SIZE.match(value)
        if not match:
            raise ValueError(f"size must be 'W*H' with integer width and height, e.g. '832*480', got {value!r}")
        width, height = int(match[1]), int(match[2])
        if width <= 0 or height <= 0 or width % SIZE_MULTIPLE or height % SIZE_MULTIPLE:
            raise ValueError(f"size {value!r}: width and height must be positive multiples of {SIZE_MULTIPLE}")
        return f"{width}*{height}"

    @property
    def prompts(self) -> list[str]:
        return [self.prompt] if isinstance(self.prompt, str) else list(self.prompt)

    @property
    def resolved_size(self) -> str:
        return self.size or TASK_SIZES[self.task][0]

    @property
    def width(self) -> int:
        return int(self.resolved_size.split("*")[0])

    @property
    def height(self) -> int:
        return int(self.resolved_size.split("*")[1])

    def warn_unofficial_size(self) -> None:
        if self.resolved_size not in TASK_SIZES[self.task]:
            logger.warning(
                "size %s is not an official size of %s (%s); calibration runs at it anyway.",
                self.resolved_size, self.task, ", ".join(TASK_SIZES[self.task]),
            )
