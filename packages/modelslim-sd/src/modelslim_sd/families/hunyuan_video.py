"""HunyuanVideo through diffusers: HunyuanVideoPipeline, its HunyuanVideoTransformer3DModel block by block.

Units: the dual-stream `transformer_blocks`, then the `single_transformer_blocks`; blocks are called
positionally (hidden_states, encoder_hidden_states, temb, attention_mask, image_rotary_emb, ...) and return
(hidden_states, encoder_hidden_states). Keys are the reference's (model_resolution, video_size,
video_length, infer_steps, seed, neg_prompt, cfg_scale, embedded_cfg_scale, num_videos, flow_shift,
batch_size) plus prompt: `cfg_scale` > 1 runs the true classifier-free guidance branch with `neg_prompt`,
`embedded_cfg_scale` is the distilled guidance the transformer embeds.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import Field, field_validator, model_validator

from modelslim_sd.families.base import GenerationAdapter
from modelslim_sd.families.settings import PromptSettings

SIZE_MULTIPLE = 16


class HunyuanVideoSettings(PromptSettings):
    model_resolution: Literal["720p", "540p"] = Field(default="720p", description="720p | 540p")
    video_size: list[int] = Field(default=[720, 1280], description="[height, width], multiples of 16")
    video_length: int = Field(default=129, ge=1, description="frames, 4n+1, default 129")
    infer_steps: int = Field(default=50, ge=1, description="integer >= 1, default 50")
    seed: int = Field(default=42, ge=0, description="integer >= 0, default 42")
    neg_prompt: str = Field(default="", description="negative prompt, used when cfg_scale > 1")
    cfg_scale: float = Field(default=1.0, ge=1.0, description="true guidance >= 1, default 1.0 (off)")
    embedded_cfg_scale: float = Field(default=6.0, ge=0, description="distilled guidance, default 6.0")
    num_videos: int = Field(default=1, ge=1, description="videos per prompt, default 1")
    flow_shift: float = Field(default=7.0, gt=0, description="flow-matching shift > 0, default 7.0")
    batch_size: Literal[1] = Field(default=1, description="1 (one prompt per generation)")
    offload_model: bool = Field(default=False, description="true | false: components visit the device one at a time")

    @field_validator("video_size")
    @classmethod
    def _size(cls, value: list[int]) -> list[int]:
        if len(value) != 2 or any(v <= 0 or v % SIZE_MULTIPLE for v in value):
            raise ValueError(f"video_size must be [height, width], positive multiples of {SIZE_MULTIPLE}, got {value}")
        return value

    @model_validator(mode="after")
    def _frames(self) -> "HunyuanVideoSettings":
        if (self.video_length - 1) % 4:
            raise ValueError(f"video_length must be 4n+1 (1, 5, ..., 129), got {self.video_length}")
        return self


class HunyuanVideoAdapter(GenerationAdapter):
    family = "hunyuan_video"
    model_types = ("HunyuanVideo", "HunyuanVideo-T2V")
    model_type_prefixes = ("HunyuanVideo", "Hunyuan-Video")
    pipeline_class_names = ("HunyuanVideoPipeline",)
    component_class_name = "HunyuanVideoTransformer3DModel"
    block_lists = ("transformer_blocks", "single_transformer_blocks")
    block_outputs = ("hidden_states", "encoder_hidden_states")
    inference_config_class = HunyuanVideoSettings
    default_task = "t2v"

    def configure_pipeline(self, pipe: Any, config: HunyuanVideoSettings) -> None:
        from diffusers import FlowMatchEulerDiscreteScheduler

        pipe.scheduler = FlowMatchEulerDiscreteScheduler.from_config(pipe.scheduler.config, shift=config.flow_shift)

    def generation_calls(self, config: HunyuanVideoSettings) -> list[dict[str, Any]]:
        height, width = config.video_size
        return [{"prompt": prompt, "negative_prompt": config.neg_prompt or None, "height": height, "width": width,
                 "num_frames": config.video_length, "num_inference_steps": config.infer_steps,
                 "true_cfg_scale": config.cfg_scale, "guidance_scale": config.embedded_cfg_scale,
                 "num_videos_per_prompt": config.num_videos} for prompt in config.prompts]
