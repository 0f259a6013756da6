"""Wan2.1 text-to-video through diffusers: WanPipeline, its WanTransformer3DModel quantized block by block.

Units are `blocks.0` ... `blocks.N-1` (WanTransformerBlock). A block takes (hidden_states,
encoder_hidden_states, timestep_proj, rotary_emb) positionally and returns the new hidden states, so the
next block's input is the output plus the same other arguments (the base adapter's rule). Tensor names are
the transformer checkpoint's own keys (`blocks.0.attn1.to_q.weight`, `blocks.0.ffn.net.2.weight`, ...).
"""

from __future__ import annotations

from typing import Any

import torch

from modelslim_core.errors import ModelError
from modelslim_core.runtime.unit import UnitInput
from modelslim_sd.adapter import DiffusionAdapter
from modelslim_sd.wan2_1.generation import record_transformer_calls
from modelslim_sd.wan2_1.inference_config import WanInferenceConfig


class Wan21Adapter(DiffusionAdapter):
    family = "wan2_1"
    model_types = ("Wan2.1", "Wan2_1")
    model_type_prefixes = ("Wan2.1-", "Wan2_1-")
    pipeline_class_names = ("WanPipeline",)
    component_class_name = "WanTransformer3DModel"
    inference_config_class = WanInferenceConfig

    def check_pipeline(self, index: dict[str, Any]) -> None:
        second = index.get("transformer_2")
        if isinstance(second, list) and any(second):
            raise ModelError(
                f"{self.model_path / 'model_index.json'} has a second transformer (transformer_2): this is a "
                "two-expert Wan2.2 pipeline, not Wan2.1.",
                "use --model_type Wan2.2-T2V-A14B (or Wan2.2-I2V-A14B) for this checkpoint.",
            )

    def task_name(self, config: WanInferenceConfig) -> str:
        return config.task

    def capture_settings(self, config: WanInferenceConfig) -> dict[str, Any]:
        """Everything but offload_model, which changes where the pipeline runs, not what it computes."""
        settings = config.model_dump(exclude={"offload_model", "size"})
        settings["size"] = config.resolved_size
        return settings

    def capture_calibration(
        self, config: WanInferenceConfig, device: torch.device, dtype: torch.dtype
    ) -> dict[str, list[UnitInput]]:
        config.warn_unofficial_size()
        return {self.component: record_transformer_calls(self.model_path, config, device, dtype)}
