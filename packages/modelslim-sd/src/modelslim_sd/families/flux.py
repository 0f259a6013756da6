"""FLUX.1 through diffusers: FluxPipeline, its FluxTransformer2DModel quantized block by block.

Units: the dual-stream `transformer_blocks` (image and text streams with joint attention), then the
single-stream `single_transformer_blocks`; every block takes (hidden_states, encoder_hidden_states, temb,
image_rotary_emb) by name and returns (encoder_hidden_states, hidden_states). Text-to-image, one
generation per prompt. Keys follow the reference's FLUX.1-dev arguments (prompt, height, width,
num_inference_steps, guidance_scale, seed, max_sequence_length).
"""

from __future__ import annotations

from typing import Any

from pydantic import Field, field_validator

from modelslim_sd.families.base import GenerationAdapter
from modelslim_sd.families.settings import PromptSettings

#: Height and width are multiples of the VAE factor (8) times the 2x2 latent packing.
SIZE_MULTIPLE = 16


class FluxSettings(PromptSettings):
    height: int = Field(default=1024, gt=0, description="pixels, a multiple of 16, default 1024")
    width: int = Field(default=1024, gt=0, description="pixels, a multiple of 16, default 1024")
    num_inference_steps: int = Field(default=50, ge=1, description="integer >= 1, default 50")
    guidance_scale: float = Field(default=3.5, ge=0, description="distilled guidance, default 3.5")
    max_sequence_length: int = Field(default=512, ge=1, le=512, description="T5 tokens, 1..512, default 512")
    seed: int = Field(default=42, ge=0, description="integer >= 0, default 42")
    offload_model: bool = Field(default=False, description="true | false: components visit the device one at a time")

    @field_validator("height", "width")
    @classmethod
    def _multiple(cls, value: int) -> int:
        if value % SIZE_MULTIPLE:
            raise ValueError(f"must be a multiple of {SIZE_MULTIPLE}, got {value}")
        return value


class Flux1Adapter(GenerationAdapter):
    family = "flux1"
    model_types = ("FLUX.1-dev", "FLUX.1-schnell", "FLUX.1")
    model_type_prefixes = ("FLUX.1", "FLUX1", "Flux.1")
    pipeline_class_names = ("FluxPipeline",)
    component_class_name = "FluxTransformer2DModel"
    block_lists = ("transformer_blocks", "single_transformer_blocks")
    block_outputs = ("encoder_hidden_states", "hidden_states")
    inference_config_class = FluxSettings
    default_task = "t2i"

    def generation_calls(self, config: FluxSettings) -> list[dict[str, Any]]:
        return [{"prompt": prompt, "height": config.height, "width": config.width,
                 "num_inference_steps": config.num_inference_steps, "guidance_scale": config.guidance_scale,
                 "max_sequence_length": config.max_sequence_length} for prompt in config.prompts]
