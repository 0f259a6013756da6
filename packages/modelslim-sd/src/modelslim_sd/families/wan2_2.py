"""Wan2.2 through diffusers: T2V-A14B and I2V-A14B (two experts), TI2V-5B (one DiT, text or image).

The A14B pipelines hold two WanTransformer3DModel: `transformer` serves the high-noise timesteps
(t >= boundary_ratio · 1000) and `transformer_2` the low-noise ones. They are quantized separately into
`save_path/high_noise_model/` and `save_path/low_noise_model/` (the layout the reference writes for MindIE-SD),
each calibrated on the calls of the timesteps it serves. TI2V-5B has one DiT (output in save_path) and
runs the image-to-video branch when an image is given.

`inference_config` keys are the reference's (size, frame_num, sample_shift, sample_solver, sample_steps,
sample_guide_scale, base_seed, offload_model, task, convert_model_dtype) plus prompt, negative_prompt and
image (one path, or one per prompt); `spec.dataset` (a prompt set, prompt_sets.py) fills prompt and image
the way the reference reads them from its dataset index. Being settings, they enter the calibration
fingerprint. `base_seed` must be >= 0 (the reference's -1 = random would make the cached
calibration unverifiable).
"""

from __future__ import annotations

import logging
from typing import Any, ClassVar, Literal

import torch
from pydantic import Field, field_validator, model_validator

from modelslim_core.errors import ConfigError, ModelError
from modelslim_sd.adapter import Denoiser
from modelslim_sd.families.base import GenerationAdapter
from modelslim_sd.families.settings import PromptSettings, check_image_paths, load_images, parse_size
from modelslim_sd.fingerprint import files_digest

logger = logging.getLogger(__name__)

#: Text length the Wan pipelines pad prompts to (their `max_sequence_length` default).
MAX_SEQUENCE_LENGTH = 512
#: Width and height are multiples of the VAE's spatial factor times the DiT's patch size.
SIZE_MULTIPLE = 16
HIGH_NOISE = Denoiser("transformer", "high_noise_model")
LOW_NOISE = Denoiser("transformer_2", "low_noise_model")


class Wan22Settings(PromptSettings):
    """The reference's Wan2.2 generation keys (defaults of T2V-A14B; subclasses change task and defaults)."""

    negative_prompt: str = Field(default="", description="a string, used when sample_guide_scale > 1")
    size: str = Field(default="1280*720", description="'W*H', multiples of 16")
    frame_num: int = Field(default=81, ge=1, description="integer 4n+1 >= 1, default 81")
    sample_shift: float = Field(default=12.0, gt=0, description="flow-matching shift > 0")
    sample_solver: Literal["unipc", "dpm++"] = Field(default="unipc", description="unipc | dpm++")
    sample_steps: int = Field(default=40, ge=1, description="integer >= 1")
    sample_guide_scale: float = Field(default=4.0, ge=0, description="number >= 0; > 1 adds the unconditional branch")
    base_seed: int = Field(default=42, ge=0, description="integer >= 0, default 42")
    offload_model: bool = Field(default=True, description="true | false: components visit the device one at a time")
    convert_model_dtype: bool = Field(
        default=True, description="true | false; the pipeline always runs in the compute dtype (what true does)")
    image: str | list[str] | None = Field(
        default=None, description="path of the conditioning image, or one per prompt (i2v; optional for ti2v)")
    task: str = Field(default="t2v-A14B", description="t2v-A14B")

    #: The task this model type runs (the reference refuses any other).
    expected_task: ClassVar[str] = "t2v-A14B"
    image_required: ClassVar[bool | None] = False  # None: optional

    @field_validator("size")
    @classmethod
    def _check_size(cls, value: str) -> str:
        width, height = parse_size(value, SIZE_MULTIPLE)
        return f"{width}*{height}"

    @field_validator("frame_num")
    @classmethod
    def _check_frames(cls, value: int) -> int:
        if (value - 1) % 4:
            raise ValueError(f"frame_num must be 4n+1 (1, 5, ..., 81, 121), got {value}")
        return value

    @field_validator("image")
    @classmethod
    def _check_image(cls, value: str | list[str] | None) -> str | list[str] | None:
        return check_image_paths(value)

    @model_validator(mode="after")
    def _check_task(self) -> "Wan22Settings":
        if self.task != self.expected_task:
            raise ValueError(f"task must be {self.expected_task!r} for this model type, got {self.task!r}")
        if self.image_required is False and self.image is not None:
            raise ValueError(f"task {self.task} is text-to-video and takes no image; remove image")
        if isinstance(self.image, list) and len(self.image) != len(self.prompts):
            raise ValueError(f"image lists {len(self.image)} paths for {len(self.prompts)} prompts; give one path, "
                             "or one per prompt")
        if not self.convert_model_dtype:
            logger.warning("convert_model_dtype: false is not used; calibration runs in the compute dtype.")
        return self

    def image_for(self, index: int) -> str | None:
        """The conditioning image of the index-th generation."""
        return self.image[index] if isinstance(self.image, list) else self.image

    @property
    def width(self) -> int:
        return int(self.size.split("*")[0])

    @property
    def height(self) -> int:
        return int(self.size.split("*")[1])


class Wan22T2VSettings(Wan22Settings):
    pass


class Wan22I2VSettings(Wan22Settings):
    sample_shift: float = Field(default=5.0, gt=0, description="flow-matching shift > 0")
    sample_guide_scale: float = Field(default=3.5, ge=0, description="number >= 0; > 1 adds the unconditional branch")
    task: str = Field(default="i2v-A14B", description="i2v-A14B")
    expected_task: ClassVar[str] = "i2v-A14B"
    image_required: ClassVar[bool | None] = True


class Wan22TI2VSettings(Wan22Settings):
    size: str = Field(default="1280*704", description="'W*H', multiples of 16")
    sample_shift: float = Field(default=5.0, gt=0, description="flow-matching shift > 0")
    sample_steps: int = Field(default=50, ge=1, description="integer >= 1")
    sample_guide_scale: float = Field(default=5.0, ge=0, description="number >= 0; > 1 adds the unconditional branch")
    task: str = Field(default="ti2v-5B", description="ti2v-5B")
    expected_task: ClassVar[str] = "ti2v-5B"
    image_required: ClassVar[bool | None] = None


class Wan22Adapter(GenerationAdapter):
    """Wan2.2-T2V-A14B: WanPipeline with two experts."""

    family = "wan2_2"
    model_types = ("Wan2.2-T2V-A14B", "Wan2_2-T2V-A14B")
    model_type_prefixes = ("Wan2.2-T2V", "Wan2_2-T2V")
    pipeline_class_names = ("WanPipeline",)
    component_class_name = "WanTransformer3DModel"
    inference_config_class = Wan22T2VSettings
    default_task = "t2v"
    two_experts: ClassVar[bool] = True

    def check_pipeline(self, index: dict[str, Any]) -> None:
        second = index.get("transformer_2")
        has_two = isinstance(second, list) and any(second)
        if has_two != self.two_experts:
            raise ModelError(
                f"{self.model_path / 'model_index.json'} has {'two transformers' if has_two else 'one transformer'}, "
                f"but model type {self.model_type!r} has {'two experts' if self.two_experts else 'one DiT'}.",
                "A14B checkpoints have transformer and transformer_2 (use Wan2.2-T2V-A14B or Wan2.2-I2V-A14B); "
                "TI2V-5B has one transformer (use Wan2.2-TI2V-5B).",
            )

    def denoisers(self) -> list[Denoiser]:
        return [HIGH_NOISE, LOW_NOISE] if self.two_experts else [Denoiser("transformer")]

    def task_name(self, config: Wan22Settings) -> str:
        return config.task

    def capture_settings(self, config: Wan22Settings) -> dict[str, Any]:
        """The conditioning images' contents belong to the fingerprint: an image replaced at the same path is
        new calibration data."""
        paths = [config.image] if isinstance(config.image, str) else config.image
        return {**super().capture_settings(config), "image_digests": files_digest(paths or [])}

    def seed(self, config: Wan22Settings) -> int:
        return config.base_seed

    def configure_pipeline(self, pipe: Any, config: Wan22Settings) -> None:
        from diffusers import DPMSolverMultistepScheduler, UniPCMultistepScheduler

        scheduler = UniPCMultistepScheduler if config.sample_solver == "unipc" else DPMSolverMultistepScheduler
        pipe.scheduler = scheduler.from_config(pipe.scheduler.config, flow_shift=config.sample_shift)

    def encode_call(self, pipe: Any, call: dict[str, Any], device: torch.device) -> dict[str, Any]:
        """Prompt embeddings through WanPipeline's text path for both Wan pipelines: the image-to-video
        pipeline's own text cleaning needs the optional `ftfy` package, which the text-to-video one only
        uses when installed; the embeddings are the same."""
        from diffusers import WanPipeline

        call = dict(call)
        dtype = pipe.text_encoder.dtype
        for key in ("prompt", "negative_prompt"):
            text = call.pop(key)
            if key == "negative_prompt" and call["guidance_scale"] <= 1.0:
                continue
            call[f"{key}_embeds"] = WanPipeline._get_t5_prompt_embeds(
                pipe, prompt=text, max_sequence_length=MAX_SEQUENCE_LENGTH, device=device, dtype=dtype)
        return call

    def conditioning(self, config: Wan22Settings, index: int) -> dict[str, Any]:
        if config.image_required and config.image is None:
            raise ConfigError(
                f"multimodal_sd_config.inference_config.image is not set, but task {config.task} captures its "
                "calibration data by generating from an image.",
                "set image to the path of the first frame, name a prompt set with images in spec.dataset (e.g. "
                "wan2_2_i2v), or use only data-free processors (enable_dump: false).")
        images = load_images(config.image_for(index))
        return {"image": images[0]} if images else {}

    def generation_calls(self, config: Wan22Settings) -> list[dict[str, Any]]:
        common = {
            "negative_prompt": config.negative_prompt,
            "height": config.height,
            "width": config.width,
            "num_frames": config.frame_num,
            "num_inference_steps": config.sample_steps,
            "guidance_scale": config.sample_guide_scale,
        }
        return [{"prompt": prompt, **common, **self.conditioning(config, index)}
                for index, prompt in enumerate(config.prompts)]


class Wan22I2VAdapter(Wan22Adapter):
    """Wan2.2-I2V-A14B: WanImageToVideoPipeline with two experts, calibrated on image-conditioned calls."""

    model_types = ("Wan2.2-I2V-A14B", "Wan2_2-I2V-A14B")
    model_type_prefixes = ("Wan2.2-I2V", "Wan2_2-I2V")
    pipeline_class_names = ("WanImageToVideoPipeline",)
    inference_config_class = Wan22I2VSettings
    default_task = "i2v"


class Wan22TI2VAdapter(Wan22Adapter):
    """Wan2.2-TI2V-5B: one DiT; text-to-video, or image-to-video (WanImageToVideoPipeline) with an image."""

    model_types = ("Wan2.2-TI2V-5B", "Wan2_2-TI2V-5B")
    model_type_prefixes = ("Wan2.2-TI2V", "Wan2_2-TI2V")
    pipeline_class_names = ("WanPipeline", "WanImageToVideoPipeline")
    inference_config_class = Wan22TI2VSettings
    default_task = "ti2v"
    two_experts = False

    def pipeline_class_for(self, config: Wan22Settings) -> str:
        return "WanImageToVideoPipeline" if config.image is not None else "WanPipeline"
