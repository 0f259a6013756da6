"""MinMax: weight parameters from each output channel's (or group's) range; activation parameters from a running range."""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.quant.base import WeightQuantizer
from modelslim_core.quant.fp8 import fp8_channel_quantize
from modelslim_core.quant.int_affine import compute_qparams, group_view, quantize
from modelslim_core.quant.int_affine import quantize_measured as int_quantize_measured
from modelslim_core.quant.layer_stats import WeightError
from modelslim_core.runtime.distributed import all_reduce, is_distributed
from modelslim_core.quant.mx import MX_FORMATS, mx_quantize
from modelslim_core.quant.schemes import BITS
from modelslim_core.quant.weight_formats import FP8Weight, IntWeight, MXWeight

#: Dtypes whose every value float32 holds exactly (their min/max need no float32 copy of the weight).
EXACT_IN_FLOAT32 = (torch.float32, torch.bfloat16, torch.float16)


def minmax_weight_qparams(
    weight: torch.Tensor, bits: int, symmetric: bool, group_size: int = 0
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and offset of a [out, in] weight: per output channel ([out]) or per group ([out, in/group_size])."""
    # The range is taken in the stored dtype: its min and max convert to float32 exactly, so no float32 copy
    # of the weight is made for them.
    w = weight.detach() if weight.dtype in EXACT_IN_FLOAT32 else weight.detach().float()
    if group_size:
        w = group_view(w, w.shape[1] // group_size)
    # amin and amax rather than aminmax: the same values, but torch's CPU aminmax along a dimension is not
    # vectorised (7.4 ms on a 292x7168 float32 block against 0.5 + 0.9 ms for the two, torch 2.x)
    return compute_qparams(torch.amin(w, dim=-1), torch.amax(w, dim=-1), bits, symmetric)


def quantize_int_weight(weight: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int, group_size: int) -> IntWeight:
    """Codes of `weight` on the grid (scale, offset), which are [out] or [out, groups]."""
    out = weight.shape[0]
    scale, offset = scale.reshape(out, -1), offset.reshape(out, -1)
    groups = scale.shape[1]
    codes = quantize(group_view(weight.detach(), groups), scale[..., None], offset[..., None], bits)
    return IntWeight(codes.reshape(weight.shape), scale, offset, bits, group_size)


class MinMaxIntWeight(WeightQuantizer):
    """int8/int4, per channel or per group, symmetric or asymmetric: the range of each row (or group)."""

    rows_independent = True

    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "") -> nn.Module:
        bits = BITS[self.qconfig.dtype]
        scale, offset = minmax_weight_qparams(weight, bits, self.qconfig.symmetric, self.group_size)
        return quantize_int_weight(weight, scale, offset, bits, self.group_size)

    def quantize_measured(self, weight: torch.Tensor, measured: WeightError, name: str = "") -> nn.Module:
        """One float32 copy of the weight serves the range, the codes and the error statistics
        (int_affine.quantize_measured); the range of its exact float32 values is the stored dtype's."""
        bits = BITS[self.qconfig.dtype]
        w = weight.detach().float()
        scale, offset = minmax_weight_qparams(w, bits, self.qconfig.symmetric, self.group_size)
        out = weight.shape[0]
        scale, offset = scale.reshape(out, -1), offset.reshape(out, -1)
        codes, w, error = int_quantize_measured(group_view(w, scale.shape[1]), scale[..., None], offset[..., None], bits)
        measured.add(w.reshape(weight.shape), error.reshape(weight.shape))
        return IntWeight(codes.reshape(weight.shape), scale, offset, bits, self.group_size)


class MinMaxFP8Weight(WeightQuantizer):
    """fp8_e4m3 per channel: each row's absolute maximum maps to 448."""

    rows_independent = True

    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "") -> nn.Module:
        return FP8Weight(*fp8_channel_quantize(weight))


class MinMaxMXWeight(WeightQuantizer):
    """MXFP8 / MXFP4: each block of 32 input columns gets the exponent of its absolute maximum."""

    rows_independent = True

    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "") -> nn.Module:
        elements, exponents = mx_quantize(weight.detach(), MX_FORMATS[self.qconfig.dtype])
        return MXWeight(elements, exponents, self.qconfig.dtype)


class MinMaxObserver:
    """Running range of an activation over all calibration batches (per tensor).

    `aggregation="max"` keeps the global min/max; `"mean"` averages each batch's min and max (in float64), a
    cheap way to ignore a single outlier batch.
    """

    def __init__(self, aggregation: str = "max"):
        self.aggregation = aggregation
        self.batches = 0
        self._min: torch.Tensor | None = None
        self._max: torch.Tensor | None = None

    def update(self, x: torch.Tensor) -> None:
        x = x.detach()
        batch_min, batch_max = torch.aminmax(x.float())
        if self.aggregation == "mean":
            batch_min, batch_max = batch_min.double(), batch_max.double()
        if self._min is None:
            self._min, self._max = batch_min, batch_max
        elif self.aggregation == "mean":
            self._min, self._max = self._min + batch_min, self._max + batch_max
        else:
            self._min, self._max = torch.minimum(self._min, batch_min), torch.maximum(self._max, batch_max)
        self.batches += 1

    def synchronize(self) -> None:
        """Merge the ranges seen by every data-parallel rank (a collective: all ranks must call it)."""
        if not is_distributed():
            return
        batches = int(all_reduce(torch.tensor(self.batches, dtype=torch.float64), "sum").item())
        if self.aggregation == "mean":
            zero = torch.tensor(0.0, dtype=torch.float64)
            lo = all_reduce(self._min if self._min is not None else zero, "sum")
            hi = all_reduce(self._max if self._max is not None else zero, "sum")
        else:
            lo = all_reduce(self._min if self._min is not None else torch.tensor(float("inf")), "min")
            hi = all_reduce(self._max if self._max is not None else torch.tensor(float("-inf")), "max")
        self.batches = batches
        if batches:
            self._min, self._max = lo, hi

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) as float32 scalars on the CPU."""
        if self._min is None or self._max is None:
            raise RuntimeError("observer saw no data")
        if self.aggregation == "mean":
            return (self._min / self.batches).float().cpu(), (self._max / self.batches).float().cpu()
        return self._min.float().cpu(), self._max.float().cpu()
