"""Per-linear statistics a quantizing processor reports: how far the quantized weight is from the float one,
what the activation quantizer was calibrated to.

Report statistics (section `layers` of quant_report.json, always) are a few scalars per linear; debug
records (namespace `linear_quant`, only under --debug) add per-output-channel tensors and the activation
quantizer's parameters. Weight error is measured on the dequantized weight, i.e. exactly what the
deployed kernel multiplies with.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import torch
from torch import nn

from modelslim_core.debug.recorder import Recorder
from modelslim_core.quant.row_blocks import row_blocks, row_slice

STATS_SECTION = "layers"
DEBUG_NAMESPACE = "linear_quant"
TOKENS_SECTION = "calib_tokens"


@dataclass
class WeightError:
    """Running weight-error statistics of one linear, fed a block of rows at a time (float32 weight rows and
    their dequantized-minus-float error), in row order; the sums are those of the whole weight at once."""

    debug: bool = False
    square_sum: float = 0.0
    error_square_sum: float = 0.0
    absmax: float = 0.0
    max_abs_error: float = 0.0
    row_absmax: list[torch.Tensor] = field(default_factory=list)
    row_rel_error: list[torch.Tensor] = field(default_factory=list)

    def add(self, w: torch.Tensor, error: torch.Tensor) -> None:
        """One block: `w` its float32 rows, `error` dequantized minus `w` (float32, same shape)."""
        row_norm = torch.linalg.vector_norm(w, dim=1)
        self.square_sum += float(row_norm.double().square().sum())
        self.error_square_sum += float(torch.linalg.vector_norm(error).double().square())
        low, high = torch.aminmax(w)
        self.absmax = max(self.absmax, -float(low), float(high))
        low, high = torch.aminmax(error)
        self.max_abs_error = max(self.max_abs_error, -float(low), float(high))
        if self.debug:
            self.row_absmax.append(w.abs().amax(dim=1))
            self.row_rel_error.append(torch.linalg.vector_norm(error, dim=1) / row_norm.clamp_min(1e-12))

    def record(self, recorder: Recorder, name: str, export_type: str, shape: tuple[int, int]) -> None:
        """Report the statistics (and, under --debug, the per-row tensors) of the linear `name`."""
        stats = {
            "type": export_type,
            "shape": list(shape),
            "weight_absmax": self.absmax,
            "weight_rel_error": math.sqrt(self.error_square_sum) / max(math.sqrt(self.square_sum), 1e-12),
            "weight_max_abs_error": self.max_abs_error,
        }
        recorder.stat(STATS_SECTION, name, stats)
        if recorder.debug_enabled and self.debug:
            recorder.debug(DEBUG_NAMESPACE, f"{name}.weight_absmax", torch.cat(self.row_absmax))
            recorder.debug(DEBUG_NAMESPACE, f"{name}.weight_rel_error", torch.cat(self.row_rel_error))
            recorder.debug(DEBUG_NAMESPACE, f"{name}.summary", stats)


def measure_weight_error(weight: torch.Tensor, qweight: nn.Module, debug: bool = False) -> WeightError:
    """Error of `qweight` (a weight container) against the float `weight` ([out, in]), a block of rows at a time
    so a large linear never has whole float32 copies. Quantizers that can (row-independent data-free ones,
    `WeightQuantizer.quantize_measured`) feed a WeightError while they quantize instead: one float32 pass less."""
    rows, columns = weight.shape
    measured = WeightError(debug=debug)
    with torch.no_grad():
        for start, stop in row_blocks(rows, columns):
            w = weight[start:stop].detach().float()
            error = row_slice(qweight, start, stop).dequantize().to(w.device).float()
            measured.add(w, error.sub_(w))
    return measured


def record_weight(recorder: Recorder, name: str, export_type: str, weight: torch.Tensor, qweight: nn.Module) -> None:
    """Relative and absolute error of `qweight` against the float `weight` (see measure_weight_error), reported."""
    measure_weight_error(weight, qweight, recorder.debug_enabled).record(recorder, name, export_type,
                                                                          tuple(weight.shape))


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
