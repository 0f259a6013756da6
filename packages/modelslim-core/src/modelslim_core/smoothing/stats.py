"""Per-channel activation statistics of smoothing subgraphs, gathered during the unit's calibration forward.

Statistics are taken at the input of a subgraph's first consumer (the producer's output), in float32, one
batched reduction per forward call. They are kept as running min, max, sum of |x| and token count: the
max |x| (symmetric), the half range max |x − (max+min)/2| (asymmetric, centred) and the mean |x| all follow
from these, and each reduces exactly across data-parallel ranks (MIN, MAX, SUM), so the result does not
depend on how samples were split or ordered. The sum of |x| (a float64 pass over every activation, about
three quarters of the statistics' cost) is kept only for processors that read the mean |x| (awq-style
scales); closed-form scales need only min and max. Processors that search over candidate scales also keep
the raw rows.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.models.subgraphs import Subgraph
from modelslim_core.runtime.distributed import all_reduce, gather_in_sample_order
from modelslim_core.runtime.observation import statistics_paused


class ChannelStats:
    """Running statistics of one `[tokens, channels]` activation stream."""

    def __init__(self, channels: int, keep_rows: bool = False, mean_abs: bool = True):
        self.min = torch.full((channels,), float("inf"))
        self.max = torch.full((channels,), float("-inf"))
        #: None when the owner never reads `mean_abs` (see the module doc).
        self.abs_sum: torch.Tensor | None = torch.zeros(channels, dtype=torch.float64) if mean_abs else None
        self.tokens = torch.zeros(1, dtype=torch.float64)
        self.keep_rows = keep_rows
        self._rows: list[torch.Tensor] = []

    def update(self, x: torch.Tensor) -> None:
        flat = x.detach().reshape(-1, x.shape[-1]).float()
        if flat.shape[0] == 0:
            return
        self.min = torch.minimum(self.min, flat.amin(dim=0).cpu())
        self.max = torch.maximum(self.max, flat.amax(dim=0).cpu())
        if self.abs_sum is not None:
            self.abs_sum += flat.abs().sum(dim=0, dtype=torch.float64).cpu()
        self.tokens += flat.shape[0]
        if self.keep_rows:
            self._rows.append(flat.cpu())

    def synchronize(self) -> None:
        """Combine the statistics of all data-parallel ranks (a collective: every rank calls it, same order)."""
        self.min = all_reduce(self.min, "min")
        self.max = all_reduce(self.max, "max")
        if self.abs_sum is not None:
            self.abs_sum = all_reduce(self.abs_sum, "sum")
        self.tokens = all_reduce(self.tokens, "sum")
        if self.keep_rows:
            self._rows = gather_in_sample_order(self._rows)  # one tensor per forward call, i.e. per sample

    @property
    def seen(self) -> bool:
        return bool(self.tokens.item() > 0)

    @property
    def absmax(self) -> torch.Tensor:
        """max |x| per channel."""
        return torch.maximum(-self.min, self.max).clamp(min=0)

    @property
    def center(self) -> torch.Tensor:
        """(max + min) / 2 per channel: the shift that makes the range symmetric around zero."""
        return (self.max + self.min) / 2

    @property
    def half_range(self) -> torch.Tensor:
        """max |x − center| per channel = (max − min) / 2."""
        return ((self.max - self.min) / 2).clamp(min=0)

    @property
    def mean_abs(self) -> torch.Tensor:
        """mean over tokens of |x| per channel."""
        if self.abs_sum is None:
            raise RuntimeError("these statistics were collected without the sum of |x| (mean_abs=False)")
        return (self.abs_sum / self.tokens.clamp(min=1)).float()

    @property
    def rows(self) -> torch.Tensor:
        """Every observed row, `[tokens, channels]` float32 (only with keep_rows)."""
        if not self._rows:
            return torch.zeros(0, self.min.numel())
        if len(self._rows) > 1:
            self._rows = [torch.cat(self._rows)]
        return self._rows[0]


class SubgraphStatsCollector:
    """Forward pre-hooks on each subgraph's first consumer, feeding one ChannelStats per subgraph."""

    def __init__(self, subgraphs: list[Subgraph], keep_rows: bool = False, mean_abs: bool = True):
        self.stats = {sg.source_name: ChannelStats(sg.channels, keep_rows, mean_abs) for sg in subgraphs}
        self._handles = [
            sg.targets[0].register_forward_pre_hook(self._hook(self.stats[sg.source_name])) for sg in subgraphs
        ]

    @staticmethod
    def _hook(stats: ChannelStats):
        def record(_module: nn.Module, args: tuple) -> None:
            if not statistics_paused():
                stats.update(args[0])

        return record

    def finish(self) -> dict[str, ChannelStats]:
        """Remove the hooks and return the rank-combined statistics keyed by source name."""
        for handle in self._handles:
            handle.remove()
        self._handles = []
        for stats in self.stats.values():
            stats.synchronize()
        return self.stats
