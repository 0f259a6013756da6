"""Smoothing scale formulas (docs/algorithms.md, "Smoothing"), all in float32.

A smoothing scale s (one per consumer input channel) divides the activation and multiplies the consumer
weight's column: x·Wᵀ = (x/s)·(W·diag(s))ᵀ. The SmoothQuant family picks s_j = a_j^α / w_j^β with a_j an
activation statistic and w_j the column max |W|; AWQ-style methods use a_j^α alone. For an `ov` pair the
scale of the o_proj columns must be the same for every query head that reads one KV head, since the v_proj
row it is fused into is shared (`head_grouped`).
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from modelslim_core.models.subgraphs import Subgraph

#: Floor of the weight statistic (a zero column would make the scale infinite).
WEIGHT_FLOOR = 1e-5

ScaleRule = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def weight_absmax(linears: tuple[nn.Linear, ...]) -> torch.Tensor:
    """max over every consumer and output row of |W[:, j]|, float32, floored at WEIGHT_FLOOR."""
    columns = torch.stack([lin.weight.detach().float().abs().amax(dim=0).cpu() for lin in linears]).amax(dim=0)
    return columns.clamp(min=WEIGHT_FLOOR)


def power_scale(act: torch.Tensor, weight: torch.Tensor, alpha: float, beta: float, floor: float) -> torch.Tensor:
    """s = max(act^α / weight^β, floor); channels that never saw a non-zero activation keep s = 1.

    The reference lets a dead channel fall to the floor, which multiplies the producer's weight by 1/floor
    (1e5) for no benefit; leaving it untouched is the sensible choice and changes nothing else.
    """
    scale = (act.pow(alpha) / weight.pow(beta)).clamp(min=floor)
    return torch.where(act > 0, scale, torch.ones_like(scale))


class HeadGroups:
    """o_proj input channels viewed as [kv_heads, queries per kv head, head_dim] (HF repeat_kv order)."""

    def __init__(self, subgraph: Subgraph):
        self.kv = subgraph.num_kv_heads
        self.ratio = subgraph.num_heads // subgraph.num_kv_heads
        self.dim = subgraph.head_dim

    def _view(self, t: torch.Tensor) -> torch.Tensor:
        return t.reshape(self.kv, self.ratio, self.dim)

    def _expand(self, per_kv: torch.Tensor) -> torch.Tensor:
        return per_kv[:, None, :].expand(self.kv, self.ratio, self.dim).reshape(-1)

    def broadcast_max(self, t: torch.Tensor) -> torch.Tensor:
        return self._expand(self._view(t).amax(dim=1))

    def broadcast_mean(self, t: torch.Tensor) -> torch.Tensor:
        return self._expand(self._view(t).mean(dim=1))

    def per_kv(self, t: torch.Tensor) -> torch.Tensor:
        """A group-constant o-side vector as the v_proj-row vector ([kv_heads·head_dim])."""
        return self._view(t)[:, 0, :].reshape(-1)


def subgraph_scale(subgraph: Subgraph, act: torch.Tensor, weight: torch.Tensor, rule: ScaleRule) -> torch.Tensor:
    """Apply `rule(act, weight)`, made constant over each KV group for `ov` (by the subgraph's group method)."""
    if subgraph.kind != "ov" or subgraph.num_heads == subgraph.num_kv_heads:
        return rule(act, weight)
    groups = HeadGroups(subgraph)
    if subgraph.group_method == "max":
        return rule(groups.broadcast_max(act), groups.broadcast_max(weight))
    return groups.broadcast_mean(rule(act, weight))
