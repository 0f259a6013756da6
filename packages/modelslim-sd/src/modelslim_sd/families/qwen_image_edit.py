"""Qwen-Image-Edit through diffusers: QwenImageEditPipeline / QwenImageEditPlusPipeline (2509).

Units: `transformer_blocks` (QwenImageTransformerBlock, dual-stream with joint attention), called by name
and returning (encoder_hidden_states, hidden_states). Calibration is image-conditioned: every generation
edits the configured image(s) (`img_paths`, required) with one prompt, so the recorded calls carry the
image latents next to the noise latents, as at serving time. A prompt set with images (`spec.dataset`)
pairs each prompt with its own image (`prompt_images`, one path per prompt) instead. Keys follow the reference's legacy arguments
(img_paths, prompt, negative_prompt, num_inference_steps, true_cfg_scale, guidance_scale, seed).
"""

from __future__ import annotations

from typing import Any, ClassVar

from pydantic import Field, field_validator, model_validator

from modelslim_core.errors import ConfigError
from modelslim_sd.families.base import GenerationAdapter
from modelslim_sd.families.settings import PromptSettings, check_image_paths, load_images
from modelslim_sd.fingerprint import files_digest


class QwenImageEditSettings(PromptSettings):
    img_paths: str | list[str] | None = Field(
        default=None, description="path(s) of the image(s) to edit (required when calibration data is captured)")
    negative_prompt: str = Field(default=" ", description="negative prompt, used when true_cfg_scale > 1")
    num_inference_steps: int = Field(default=40, ge=1, description="integer >= 1, default 40")
    true_cfg_scale: float = Field(default=4.0, ge=0, description="true guidance, default 4.0")
    guidance_scale: float = Field(default=1.0, ge=0, description="distilled guidance, default 1.0")
    height: int | None = Field(default=None, description="output pixels (default: from the image)")
    width: int | None = Field(default=None, description="output pixels (default: from the image)")
    seed: int = Field(default=0, ge=0, description="integer >= 0, default 0")
    prompt_images: list[str] | None = Field(
        default=None, description="one image per prompt, each edited with its prompt (filled from spec.dataset)")
    offload_model: bool = Field(default=False, description="true | false: components visit the device one at a time")

    #: prompt_sets.with_prompt_set puts a prompt set's images here: img_paths means images edited with every prompt
    PROMPT_IMAGE_FIELD: ClassVar[str] = "prompt_images"
    image_required: ClassVar[bool | None] = True

    @field_validator("img_paths")
    @classmethod
    def _images(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None and not value:
            raise ValueError("img_paths must name at least one image")
        return check_image_paths(value)

    @field_validator("prompt_images")
    @classmethod
    def _prompt_images(cls, value: list[str] | None) -> list[str] | None:
        return check_image_paths(value)

    @model_validator(mode="after")
    def _one_image_source(self) -> "QwenImageEditSettings":
        if self.prompt_images is not None and self.img_paths is not None:
            raise ValueError("img_paths and prompt_images (a prompt set's images) both give the images to edit; "
                             "keep one of them")
        if self.prompt_images is not None and len(self.prompt_images) != len(self.prompts):
            raise ValueError(f"prompt_images lists {len(self.prompt_images)} paths for {len(self.prompts)} prompts; "
                             "give one per prompt")
        return self

    def images_for(self, index: int) -> list[str] | str:
        """The image path(s) the index-th generation edits."""
        return [self.prompt_images[index]] if self.prompt_images is not None else self.img_paths


class QwenImageEditAdapter(GenerationAdapter):
    family = "qwen_image_edit"
    model_types = ("Qwen-Image-Edit", "Qwen-Image-Edit-2509")
    model_type_prefixes = ("Qwen-Image-Edit",)
    pipeline_class_names = ("QwenImageEditPipeline", "QwenImageEditPlusPipeline")
    component_class_name = "QwenImageTransformer2DModel"
    block_lists = ("transformer_blocks",)
    block_outputs = ("encoder_hidden_states", "hidden_states")
    inference_config_class = QwenImageEditSettings
    default_task = "edit"

    def capture_settings(self, config: QwenImageEditSettings) -> dict[str, Any]:
        paths = config.prompt_images or ([config.img_paths] if isinstance(config.img_paths, str) else config.img_paths)
        return {**super().capture_settings(config), "image_digests": files_digest(paths or [])}

    def generation_calls(self, config: QwenImageEditSettings) -> list[dict[str, Any]]:
        if config.img_paths is None and config.prompt_images is None:
            raise ConfigError(
                "multimodal_sd_config.inference_config.img_paths is not set, but calibration data is captured by "
                "editing images with the float pipeline.",
                "set img_paths to the image(s) to edit, name a prompt set with images in spec.dataset, or use only "
                "data-free processors (enable_dump: false).")
        # The Plus pipeline (2509) edits a list of images together; the first edits one.
        plus = self.model_index["_class_name"] == "QwenImageEditPlusPipeline"
        calls = []
        for index, prompt in enumerate(config.prompts):
            images = load_images(config.images_for(index))
            calls.append({"image": images if plus else images[0], "prompt": prompt,
                          "negative_prompt": config.negative_prompt, "num_inference_steps": config.num_inference_steps,
                          "true_cfg_scale": config.true_cfg_scale, "guidance_scale": config.guidance_scale,
                          "height": config.height, "width": config.width})
        return calls
