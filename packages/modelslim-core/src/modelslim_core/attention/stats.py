"""Running statistics of attention states, kept in float32 and reduced across data-parallel ranks.

States arrive as `[B, H, S, D]`. `ChannelRange` keeps a min/max per (head, dim) channel — the KV-cache
scales and the KV-smooth factors are per channel of the `H·D` projection output. `HeadRecallWindow` keeps a
per-head range that ignores the most extreme `(1 − ratio)` share of values (FA3). Both accumulate over every
calibration call (the reference keeps only the last call for KV-cache ranges, which makes the scales depend
on whichever sample happens to be last), and `synchronize` merges ranks with MIN/MAX all-reduces: a
collective every rank must call once per unit.
"""

from __future__ import annotations

import torch

from modelslim_core.runtime.distributed import all_reduce


def heads_first(states: torch.Tensor) -> torch.Tensor:
    """`[B, H, S, D]` -> `[H, B·S·D]` (float32): every value of one head in one row, whatever the batch size."""
    return states.detach().float().transpose(0, 1).reshape(states.shape[1], -1)


class _RunningRange:
    def __init__(self) -> None:
        self.min: torch.Tensor | None = None
        self.max: torch.Tensor | None = None

    @property
    def seen(self) -> bool:
        return self.min is not None

    def _merge(self, batch_min: torch.Tensor, batch_max: torch.Tensor) -> None:
        if self.min is None:
            self.min, self.max = batch_min, batch_max
        else:
            self.min, self.max = torch.minimum(self.min, batch_min), torch.maximum(self.max, batch_max)

    def synchronize(self, shape: tuple[int, ...]) -> None:
        """MIN/MAX all-reduce; a rank that saw nothing contributes +inf/-inf (`shape` is the statistic's shape)."""
        lo = self.min if self.min is not None else torch.full(shape, float("inf"))
        hi = self.max if self.max is not None else torch.full(shape, float("-inf"))
        lo, hi = all_reduce(lo, "min"), all_reduce(hi, "max")
        if torch.isfinite(lo).all():
            self.min, self.max = lo, hi

    def range(self) -> tuple[torch.Tensor, torch.Tensor]:
        if self.min is None or self.max is None:
            raise RuntimeError("no attention states were observed")
        return self.min, self.max


class ChannelRange(_RunningRange):
    """Per (head, dim) min and max over batch and sequence: statistics of shape `[H·D]`."""

    def update(self, states: torch.Tensor) -> None:
        flat = states.detach().float().transpose(1, 2).reshape(-1, states.shape[1] * states.shape[3])
        self._merge(flat.amin(dim=0), flat.amax(dim=0))

    def abs_max(self) -> torch.Tensor:
        lo, hi = self.range()
        return torch.maximum(lo.abs(), hi.abs())


def recall_window(rows: torch.Tensor, ratio: float) -> tuple[torch.Tensor, torch.Tensor]:
    """Per row, the narrowest interval of sorted values holding ⌊ratio·N⌋ of them (at least one): an outlier
    beyond that share does not stretch the range. Returns (low, high), each `[rows]`."""
    values, _ = torch.sort(rows, dim=1)
    n = values.shape[1]
    keep = min(n, max(1, int(ratio * n)))
    widths = values[:, keep - 1 :] - values[:, : n - keep + 1]
    start = widths.argmin(dim=1, keepdim=True)
    return values.gather(1, start).squeeze(1), values.gather(1, start + keep - 1).squeeze(1)


class HeadRecallWindow(_RunningRange):
    """Per-head recall-window range, accumulated as the min of lows and max of highs over calls: `[H]`."""

    def __init__(self, ratio: float) -> None:
        super().__init__()
        self.ratio = ratio

    def update(self, states: torch.Tensor) -> None:
        self._merge(*recall_window(heads_first(states), self.ratio))
