"""The closed-form SmoothQuant scale shared by `smooth_quant` and `iter_smooth`.

s_j = max(a_j^α / w_j^(1−α), floor), with a_j = max |x_j| and w_j = max over the consumers' rows of |W_ij|.
With `symmetric: false` a norm-linear subgraph is first centred by its per-channel shift (max+min)/2, and
a_j is the half range max |x_j − shift_j|; other kinds are never shifted (their producer has no bias slot
that could absorb it in every family).

The reference recomputes the shift per batch and measures |x − shift| against the shift of that moment,
so its statistic depends on sample order and cannot be combined exactly across ranks; with the final
shift the statistic is exactly (max − min)/2, which is what we use. The reference also takes the signed
(not absolute) column max of the weight for non-norm kinds; we use |W| everywhere.
"""

from __future__ import annotations

import torch

from modelslim_core.models.subgraphs import Subgraph
from modelslim_core.smoothing.scales import power_scale, subgraph_scale, weight_absmax
from modelslim_core.smoothing.stats import ChannelStats


def closed_form_scale(subgraph: Subgraph, stats: ChannelStats, alpha: float, floor: float,
                      symmetric: bool) -> tuple[torch.Tensor, torch.Tensor | None]:
    """(scale, shift) of one subgraph; shift is None unless it is a norm-linear subgraph and not symmetric."""
    shifted = not symmetric and subgraph.kind == "norm-linear"
    act = stats.half_range if shifted else stats.absmax
    scale = subgraph_scale(subgraph, act, weight_absmax(subgraph.targets),
                           lambda a, w: power_scale(a, w, alpha, 1.0 - alpha, floor))
    return scale, (stats.center if shifted else None)
