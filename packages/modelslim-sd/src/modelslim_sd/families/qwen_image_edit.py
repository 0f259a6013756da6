"""Qwen-Image-Edit through diffusers: QwenImageEditPipeline / QwenImageEditPlusPipeline (2509).

Units: `transformer_blocks` (QwenImageTransformerBlock, dual-stream with joint attention), called by name
and returning (encoder_hidden_states, hidden_states). Calibration is image-conditioned: every generation
edits the configured image(s) (`img_paths`, required) with one prompt, so the recorded calls carry the
image latents next to the noise latents, as at serving time. Keys follow the reference's legacy arguments
(img_paths, prompt, negative_prompt, num_inference_steps, true_cfg_scale, guidance_scale, seed).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from modelslim_core.errors import ConfigError
from modelslim_sd.families.base import GenerationAdapter
from modelslim_sd.families.settings import PromptSettings, check_image_paths, load_images


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
    offload_model: bool = Field(default=False, description="true | false: components visit the device one at a time")

    @field_validator("img_paths")
    @classmethod
    def _images(cls, value: str | list[str] | None) -> str | list[str] | None:
        if value is not None and not value:
            raise ValueError("img_paths must name at least one image")
        return check_image_paths(value)


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

    def generation_calls(self, config: QwenImageEditSettings) -> list[dict[str, Any]]:
        if config.img_paths is None:
            raise ConfigError(
                "multimodal_sd_config.inference_config.img_paths is not set, but calibration data is captured by "
                "editing images with the float pipeline.",
                "set img_paths to the image(s) to edit, or use only data-free processors (enable_dump: false).")
        images = load_images(config.img_paths)
        # The Plus pipeline (2509) edits a list of images together; the first edits one.
        image = images if self.model_index["_class_name"] == "QwenImageEditPlusPipeline" else images[0]
        return [{"image": image, "prompt": prompt, "negative_prompt": config.negative_prompt,
                 "num_inference_steps": config.num_inference_steps, "true_cfg_scale": config.true_cfg_scale,
                 "guidance_scale": config.guidance_scale, "height": config.height, "width": config.width}
                for prompt in config.prompts]
