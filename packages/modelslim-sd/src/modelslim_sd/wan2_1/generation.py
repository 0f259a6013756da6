"""Running the float Wan2.1 pipeline (diffusers' WanPipeline) to record its transformer's calls.

Only the denoising loop matters for calibration, so the latents are returned undecoded (`output_type
"latent"`): the VAE never decodes a video. With `offload_model` the text encoder is loaded, used for every
prompt and released before the transformer is loaded, so the device never holds both (UMT5-XXL alone is
~11 GB in bf16); without it the whole pipeline is loaded once. Both give the same records.
"""

from __future__ import annotations

import gc
import logging
from pathlib import Path
from typing import Any

import torch

from modelslim_core.errors import ModelError
from modelslim_core.runtime.unit import UnitInput
from modelslim_sd.capture import CallRecorder
from modelslim_sd.wan2_1.inference_config import WanInferenceConfig

logger = logging.getLogger(__name__)

#: Text length the Wan2.1 pipeline pads prompts to (WanPipeline.__call__'s default).
MAX_SEQUENCE_LENGTH = 512


def load_pipeline(model_path: Path, dtype: torch.dtype, device: torch.device, **components: Any) -> Any:
    """WanPipeline from the local directory on `device`; `components=None` entries are not loaded."""
    from diffusers import WanPipeline

    try:
        pipe = WanPipeline.from_pretrained(model_path, dtype=dtype, local_files_only=True, **components)
    except Exception as exc:
        raise ModelError(
            f"cannot load the Wan2.1 pipeline from {str(model_path)!r}: {exc}",
            "the directory needs model_index.json and the transformer, vae, text_encoder, tokenizer and "
            "scheduler folders of a diffusers-format Wan2.1 checkpoint.",
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe.to(device)


def free_memory(device: torch.device) -> None:
    """Return released pipeline memory to the system and the device's allocator cache."""
    gc.collect()
    backend = getattr(torch, device.type, None)  # torch.cuda, or torch.npu once torch_npu is imported
    if device.type != "cpu" and hasattr(backend, "empty_cache"):
        backend.empty_cache()


def _encode_prompts(
    model_path: Path, config: WanInferenceConfig, device: torch.device, dtype: torch.dtype
) -> list[dict[str, Any]]:
    """Prompt (and, with guidance, negative prompt) embeddings of every prompt, from a text-only pipeline."""
    pipe = load_pipeline(model_path, dtype, device, transformer=None, vae=None)
    encoded = []
    for prompt in config.prompts:
        positive, negative = pipe.encode_prompt(
            prompt=prompt,
            negative_prompt=config.negative_prompt,
            do_classifier_free_guidance=config.guidance > 1.0,
            max_sequence_length=MAX_SEQUENCE_LENGTH,
            device=device,
            dtype=dtype,
        )
        encoded.append({"prompt_embeds": positive, "negative_prompt_embeds": negative})
    del pipe
    free_memory(device)
    return encoded


def record_transformer_calls(
    model_path: Path, config: WanInferenceConfig, device: torch.device, dtype: torch.dtype
) -> list[UnitInput]:
    """Generate once per prompt (seed + prompt index) and return every transformer call, on the CPU."""
    if config.offload_model:
        inputs = _encode_prompts(model_path, config, device, dtype)
        pipe = load_pipeline(model_path, dtype, device, text_encoder=None, tokenizer=None)
    else:
        inputs = [{"prompt": prompt, "negative_prompt": config.negative_prompt} for prompt in config.prompts]
        pipe = load_pipeline(model_path, dtype, device)
    records: list[UnitInput] = []
    for index, prompt_inputs in enumerate(inputs):
        with CallRecorder(pipe.transformer) as recorder:
            pipe(
                **prompt_inputs,
                height=config.height,
                width=config.width,
                num_frames=config.frame_num,
                num_inference_steps=config.sample_steps,
                guidance_scale=config.guidance,
                generator=torch.Generator("cpu").manual_seed(config.seed + index),
                max_sequence_length=MAX_SEQUENCE_LENGTH,
                output_type="latent",
            )
        records += recorder.records
        logger.info("Prompt %d/%d: recorded %d transformer calls.", index + 1, len(inputs), len(recorder.records))
    del pipe
    free_memory(device)
    return records
