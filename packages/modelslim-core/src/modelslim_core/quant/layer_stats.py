"""Per-linear statistics a quantizing processor reports: how far the quantized weight is from the float one,
what the activation quantizer was calibrated to.

Report statistics (section `layers` of quant_report.json, always) are a few scalars per linear; debug
records (namespace `linear_quant`, only under --debug) add per-output-channel tensors and the activation
quantizer's parameters. Weight error is measured on the dequantized weight, i.e. exactly what the
deployed kernel multiplies with.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from modelslim_core.debug.recorder import Recorder
from modelslim_core.quant.row_blocks import row_blocks, row_slice

STATS_SECTION = "layers"
DEBUG_NAMESPACE = "linear_quant"
TOKENS_SECTION = "calib_tokens"


def record_weight(recorder: Recorder, name: str, export_type: str, weight: torch.Tensor, qweight: nn.Module) -> None:
    """Relative and absolute error of `qweight` (a weight container) against the float `weight` ([out, in]),
    computed a block of rows at a time so a large linear never has whole float32 copies."""
    rows, columns = weight.shape
    square_sum = error_square_sum = 0.0
    absmax = max_abs_error = 0.0
    row_absmax, row_rel_error = [], []
    with torch.no_grad():
        for start, stop in row_blocks(rows, columns):
            w = weight[start:stop].detach().float()
            error = row_slice(qweight, start, stop).dequantize().to(w.device).float()
            error.sub_(w)
            row_norm = torch.linalg.vector_norm(w, dim=1)
            square_sum += float(row_norm.double().square().sum())
            error_square_sum += float(torch.linalg.vector_norm(error).double().square())
            low, high = torch.aminmax(w)
            absmax = max(absmax, -float(low), float(high))
            low, high = torch.aminmax(error)
            max_abs_error = max(max_abs_error, -float(low), float(high))
            if recorder.debug_enabled:
                row_absmax.append(w.abs().amax(dim=1))
                row_rel_error.append(torch.linalg.vector_norm(error, dim=1) / row_norm.clamp_min(1e-12))
    stats = {
        "type": export_type,
        "shape": [rows, columns],
        "weight_absmax": absmax,
        "weight_rel_error": math.sqrt(error_square_sum) / max(math.sqrt(square_sum), 1e-12),
        "weight_max_abs_error": max_abs_error,
    }
    recorder.stat(STATS_SECTION, name, stats)
    if recorder.debug_enabled:
        recorder.debug(DEBUG_NAMESPACE, f"{name}.weight_absmax", torch.cat(row_absmax))
        recorder.debug(DEBUG_NAMESPACE, f"{name}.weight_rel_error", torch.cat(row_rel_error))
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
