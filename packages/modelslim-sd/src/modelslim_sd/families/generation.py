"""Running a float diffusers pipeline to record what each denoiser receives (the "args" capture mode).

Every denoiser of the pipeline gets a CallRecorder; each configured generation runs once, seeded
`seed + index`, and stops at the latents (`output_type="latent"`: the VAE never decodes a video). A
two-expert pipeline (Wan2.2-A14B) calls its high-noise expert on the early timesteps and its low-noise
expert on the late ones, so each expert's records are exactly the timesteps it serves.
"""

from __future__ import annotations

import contextlib
import gc
import logging
from pathlib import Path
from typing import Any

import torch

from modelslim_core.errors import ModelError
from modelslim_core.runtime.unit import UnitInput
from modelslim_sd.capture import CallRecorder

logger = logging.getLogger(__name__)


def load_pipeline(pipeline_class: str, model_path: Path, dtype: torch.dtype, **components: Any) -> Any:
    """The diffusers pipeline `pipeline_class` from the local directory (never from a hub)."""
    import diffusers

    try:
        pipe = getattr(diffusers, pipeline_class).from_pretrained(
            model_path, dtype=dtype, local_files_only=True, **components)
    except Exception as exc:
        raise ModelError(
            f"cannot load the {pipeline_class} pipeline from {str(model_path)!r}: {exc}",
            "calibration data is captured by running the whole float pipeline: the directory needs "
            "model_index.json and every component folder (text encoder, tokenizer, VAE, scheduler, transformer).",
        ) from None
    pipe.set_progress_bar_config(disable=True)
    return pipe


def free_memory(device: torch.device) -> None:
    """Return released pipeline memory to the system and the device's allocator cache."""
    gc.collect()
    backend = getattr(torch, device.type, None)  # torch.cuda, or torch.npu once torch_npu is imported
    if device.type != "cpu" and hasattr(backend, "empty_cache"):
        backend.empty_cache()


def place(pipe: Any, device: torch.device, offload: bool) -> Any:
    """The pipeline on `device`; with `offload` (and an accelerator) each component visits the device only
    while it runs, so the text encoder and the denoisers never occupy it together."""
    if offload and device.type != "cpu":
        pipe.enable_model_cpu_offload(device=device)
        return pipe
    return pipe.to(device)


def record_generations(
    pipe: Any, components: list[str], calls: list[dict[str, Any]], seed: int, device: torch.device
) -> dict[str, list[UnitInput]]:
    """Run `pipe(**call)` for every call (seeded seed + index) and return each component's recorded calls."""
    records: dict[str, list[UnitInput]] = {component: [] for component in components}
    for index, call in enumerate(calls):
        with contextlib.ExitStack() as stack:
            recorders = [stack.enter_context(CallRecorder(getattr(pipe, component))) for component in components]
            pipe(**call, generator=torch.Generator("cpu").manual_seed(seed + index), output_type="latent")
        for component, recorder in zip(components, recorders):
            records[component] += recorder.records
        logger.info("Generation %d/%d: recorded %s.", index + 1, len(calls),
                    ", ".join(f"{len(r.records)} calls of {c}" for c, r in zip(components, recorders)))
    free_memory(device)
    return records
