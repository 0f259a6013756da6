"""MinMax: weight parameters from each output channel's range; activation parameters from a running range."""

from __future__ import annotations

import torch

from modelslim_core.quant.int_affine import compute_qparams
from modelslim_core.runtime.distributed import all_reduce, is_distributed


def minmax_weight_qparams(weight: torch.Tensor, bits: int, symmetric: bool) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel scale and offset (shape [out]) of a [out, in] weight."""
    w = weight.detach().float()
    return compute_qparams(w.amin(dim=1), w.amax(dim=1), bits, symmetric)


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
