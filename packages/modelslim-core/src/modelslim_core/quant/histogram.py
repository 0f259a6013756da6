"""Histogram: a static per-tensor activation range chosen by minimising the expected quantization error.

What it does (and how it differs from the reference, whose mirrored search stops at once and returns the
last batch's min/max):

1. A running histogram of 2048 bins over ALL calibration batches. When a batch falls outside the current
   range, the range grows to cover it and the old counts are re-binned onto the new bins by interpolating
   their cumulative distribution (mass assumed uniform inside each old bin), so no batch is forgotten.
   NaN/Inf values are dropped with one warning.
2. A search over clipping ranges [a, b] (always widened to contain 0, as the integer grid requires) that
   minimises the expected squared error of quantizing a value drawn from the histogram:
       E(a, b) = Σ_{c<a} m·(a−c)² + Σ_{c>b} m·(c−b)² + M_in · s²/12,
   with bin masses m at bin centres c, M_in the mass inside [a, b] and s the grid step of that range
   (rounding error uniform over a step). Prefix sums make each candidate O(1). Asymmetric schemes search
   (a, b) over bin edges; symmetric ones search a threshold T with [a, b] = [−T, T]. A coarse pass over
   every 16th edge is refined at full resolution around its best candidate.

A constant input (zero-width range) skips the search and uses that value.
"""

from __future__ import annotations

import logging

import torch

logger = logging.getLogger(__name__)

BINS = 2048
_COARSE_STRIDE = 16


def _interp(x: torch.Tensor, xp: torch.Tensor, fp: torch.Tensor) -> torch.Tensor:
    """Piecewise-linear interpolation of (xp, fp) at x (xp increasing), constant beyond the ends."""
    index = torch.searchsorted(xp, x).clamp(1, len(xp) - 1)
    x0, x1 = xp[index - 1], xp[index]
    t = ((x - x0) / (x1 - x0)).clamp(0, 1)
    return fp[index - 1] + t * (fp[index] - fp[index - 1])


class HistogramObserver:
    """Running histogram of an activation, and the error-minimising clipping range of it."""

    def __init__(self, bits: int, symmetric: bool):
        self.levels = 2**bits - 1
        self.symmetric = symmetric
        self.batches = 0
        self.hist = torch.zeros(BINS, dtype=torch.float64)
        self.lo = self.hi = 0.0
        self._warned = False

    # --- accumulation -------------------------------------------------------------------------------------
    def update(self, x: torch.Tensor) -> None:
        values = x.detach().float().flatten()
        finite = torch.isfinite(values)
        if not bool(finite.all()):
            if not self._warned:
                logger.warning("histogram observer: dropping NaN/Inf activation values.")
                self._warned = True
            values = values[finite]
        if values.numel() == 0:
            return
        low, high = (v.item() for v in torch.aminmax(values))
        if self.batches == 0:
            self.lo, self.hi = low, high
        elif low < self.lo or high > self.hi:
            self._grow(min(low, self.lo), max(high, self.hi))
        self.hist += self._counts(values)
        self.batches += 1

    def _counts(self, values: torch.Tensor) -> torch.Tensor:
        if self.hi > self.lo:
            return torch.histc(values, BINS, self.lo, self.hi).double().cpu()
        counts = torch.zeros(BINS, dtype=torch.float64)
        counts[0] = values.numel()  # zero-width range: every value equals lo
        return counts

    def _edges(self, lo: float, hi: float) -> torch.Tensor:
        return torch.linspace(lo, hi, BINS + 1, dtype=torch.float64)

    def _grow(self, lo: float, hi: float) -> None:
        """Re-bin the counts onto [lo, hi] by interpolating their cumulative distribution."""
        new_edges = self._edges(lo, hi)
        if self.hi > self.lo:
            cdf = torch.cat((torch.zeros(1, dtype=torch.float64), self.hist.cumsum(0)))
            self.hist = torch.diff(_interp(new_edges, self._edges(self.lo, self.hi), cdf))
        else:
            point = int(min((self.lo - lo) / (hi - lo) * BINS, BINS - 1))
            total, self.hist = self.hist.sum(), torch.zeros(BINS, dtype=torch.float64)
            self.hist[point] = total
        self.lo, self.hi = lo, hi

    # --- search -------------------------------------------------------------------------------------------
    def expected_error(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        """E(a, b) for candidate ranges (float64 tensors of equal shape), after widening them to contain 0."""
        a, b = torch.clamp(a, max=0.0), torch.clamp(b, min=0.0)
        width = (self.hi - self.lo) / BINS
        centres = self.lo + width * (torch.arange(BINS, dtype=torch.float64) + 0.5)
        zero = torch.zeros(1, dtype=torch.float64)
        p0, p1, p2 = (torch.cat((zero, (self.hist * centres**k).cumsum(0))) for k in range(3))
        below = torch.searchsorted(centres, a.contiguous())
        inside_end = torch.searchsorted(centres, b.contiguous(), right=True)
        clip_low = a**2 * p0[below] - 2 * a * p1[below] + p2[below]
        clip_high = (p2[-1] - p2[inside_end]) - 2 * b * (p1[-1] - p1[inside_end]) + b**2 * (p0[-1] - p0[inside_end])
        step = (b - a) / self.levels
        return clip_low + clip_high + (p0[inside_end] - p0[below]) * step**2 / 12

    def _best_pair(self, lows: torch.Tensor, highs: torch.Tensor) -> tuple[int, int]:
        """Indices (into the candidate grids) of the lowest-error (a, b)."""
        a, b = torch.meshgrid(lows, highs, indexing="ij")
        errors = self.expected_error(a.flatten(), b.flatten())
        best = int(torch.argmin(errors))
        return best // len(highs), best % len(highs)

    def _search(self, grid: torch.Tensor, paired: bool) -> tuple[float, float]:
        """Coarse search over every 16th grid point, refined at full resolution around the winner."""
        coarse = torch.arange(0, len(grid), _COARSE_STRIDE)
        if coarse[-1] != len(grid) - 1:
            coarse = torch.cat((coarse, torch.tensor([len(grid) - 1])))
        if paired:
            i, j = self._best_pair(grid[coarse], grid[coarse])
            i, j = int(coarse[i]), int(coarse[j])
            lows = torch.arange(max(i - _COARSE_STRIDE, 0), min(i + _COARSE_STRIDE + 1, len(grid)))
            highs = torch.arange(max(j - _COARSE_STRIDE, 0), min(j + _COARSE_STRIDE + 1, len(grid)))
            i, j = self._best_pair(grid[lows], grid[highs])
            return float(grid[lows[i]]), float(grid[highs[j]])
        errors = self.expected_error(-grid[coarse], grid[coarse])
        k = int(coarse[int(torch.argmin(errors))])
        fine = torch.arange(max(k - _COARSE_STRIDE, 0), min(k + _COARSE_STRIDE + 1, len(grid)))
        t = float(grid[fine[int(torch.argmin(self.expected_error(-grid[fine], grid[fine])))]])
        return -t, t

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        """The chosen (clip_min, clip_max) as float32 scalars on the CPU."""
        if self.batches == 0:
            raise RuntimeError("observer saw no data")
        if self.hi <= self.lo:
            low, high = self.lo, self.hi
        elif self.symmetric:
            amax = max(abs(self.lo), abs(self.hi))
            low, high = self._search(torch.linspace(0.0, amax, BINS + 1, dtype=torch.float64)[1:], paired=False)
        else:
            low, high = self._search(self._edges(self.lo, self.hi), paired=True)
        return torch.tensor(low, dtype=torch.float32), torch.tensor(high, dtype=torch.float32)
