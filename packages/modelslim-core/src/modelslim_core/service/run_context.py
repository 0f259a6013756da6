"""The one place a service turns a `QuantRequest` into the `RunContext` its runner gets.

Every service (modelslim_v1, VLM, SD) builds its context here, so what the CLI promises behaves the same for
all of them: `--debug` records go to save_path/debug_info/ (the recorder), quant_report.json carries the
config digest, the compute dtype follows one rule, and a run is resumable when its fingerprint is known.
"""

from __future__ import annotations

from pathlib import Path

import torch

from modelslim_core.models.base import ModelAdapter
from modelslim_core.runtime.context import DeviceSpec, RunContext
from modelslim_core.runtime.fingerprint import run_fingerprint
from modelslim_core.service.base import QuantRequest


def compute_dtype_for(device_type: str, source: torch.dtype | None) -> torch.dtype:
    """float32 on CPU (bf16 matmuls are slow there and float32 keeps statistics exact); the model's dtype elsewhere."""
    if device_type == "cpu" or source is None:
        return torch.float32
    return source


def build_run_context(request: QuantRequest, device: DeviceSpec | None = None, resumable: bool = True,
                      adapter: ModelAdapter | None = None, save_path: Path | None = None) -> RunContext:
    """The run context of `request`: its adapter and paths, recorder, config digest and (when `resumable` and
    the config is known) the resume fingerprint. `device` overrides the request's (a one-device service);
    `adapter` / `save_path` narrow the run to one part of the model (one denoiser of a pipeline)."""
    device = device or request.device
    adapter = adapter or request.adapter
    save_path = save_path or request.save_path
    compute_dtype = compute_dtype_for(device.type, adapter.source_dtype)
    fingerprint = ""
    if resumable and request.config_digest:
        fingerprint = run_fingerprint(request.config_digest, request.model_path, compute_dtype, device.type)
    return RunContext(
        adapter=adapter,
        model_path=request.model_path,
        save_path=save_path,
        device=device,
        compute_dtype=compute_dtype,
        recorder=request.new_recorder(),
        config_digest=request.config_digest,
        fingerprint=fingerprint,
    )
