"""MinMax: weight parameters from each output channel's range; activation parameters from a running range."""

from __future__ import annotations

import torch

from modelslim_core.quant.int_affine import compute_qparams


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

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """(min, max) as float32 scalars on the CPU."""
        if self._min is None or self._max is None:
            raise RuntimeError("observer saw no data")
        if self.aggregation == "mean":
            return (self._min / self.batches).float().cpu(), (self._max / self.batches).float().cpu()
        return self._min.float().cpu(), self._max.float().cpu()
