"""Per-linear statistics a quantizing processor reports: how far the quantized weight is from the float one,
what the activation quantizer was calibrated to.

Report statistics (section `layers` of quant_report.json, always) are a few scalars per linear; debug
records (namespace `linear_quant`, only under --debug) add per-output-channel tensors and the activation
quantizer's parameters. Weight error is measured on the dequantized weight, i.e. exactly what the
deployed kernel multiplies with.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.debug.recorder import Recorder

STATS_SECTION = "layers"
DEBUG_NAMESPACE = "linear_quant"
TOKENS_SECTION = "calib_tokens"


def record_weight(recorder: Recorder, name: str, export_type: str, weight: torch.Tensor, qweight: nn.Module) -> None:
    """Relative and absolute error of `qweight` (a weight container) against the float `weight` ([out, in])."""
    with torch.no_grad():
        w = weight.detach().float()
        error = qweight.dequantize().to(w.device).float() - w
        w_norm = w.norm()
        row_norm = w.norm(dim=1).clamp_min(1e-12)
        stats = {
            "type": export_type,
            "shape": list(w.shape),
            "weight_absmax": float(w.abs().max()),
            "weight_rel_error": float(error.norm() / w_norm.clamp_min(1e-12)),
            "weight_max_abs_error": float(error.abs().max()),
        }
        recorder.stat(STATS_SECTION, name, stats)
        if recorder.debug_enabled:
            recorder.debug(DEBUG_NAMESPACE, f"{name}.weight_absmax", w.abs().amax(dim=1))
            recorder.debug(DEBUG_NAMESPACE, f"{name}.weight_rel_error", error.norm(dim=1) / row_norm)
            recorder.debug(DEBUG_NAMESPACE, f"{name}.summary", stats)


def record_activation(recorder: Recorder, name: str, tokens: int, act: nn.Module) -> None:
    """Calibration tokens seen (section `calib_tokens`, summed over data-parallel ranks) and the calibrated
    activation parameters (static schemes' scale/offset, identical on every rank after the all-reduce)."""
    recorder.stat(TOKENS_SECTION, name, tokens, combine="sum")
    entry = recorder.stats.get(STATS_SECTION, {}).get(name)
    for buffer_name, value in act.named_buffers():
        if value is not None and value.numel() <= 16:
            flat = value.detach().float().flatten().tolist()
            if entry is not None:
                entry[f"act_{buffer_name}"] = flat[0] if len(flat) == 1 else flat
        recorder.debug(DEBUG_NAMESPACE, f"{name}.act_{buffer_name}", value)
