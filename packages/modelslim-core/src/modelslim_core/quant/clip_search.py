"""Clipping search: per-row grid parameters that minimise the (input-weighted) rounding error of a weight slice.

The range of a row (minmax) is rarely the best grid at 4 bits: one large weight stretches the step for all
the others. Shrinking the range to a fraction p of it clips that weight a little and rounds every other
weight on a finer grid. For each row, every candidate p in CLIP_RATIOS is tried and the one with the least

    Σ_j importance_j · (w_j − dequant(quant(w_j)))²

is kept; `importance` is the mean squared input of column j (the Hessian diagonal), so columns whose inputs
are large count for more, which is what the layer's output error weighs them by. p = 1 is always a
candidate, so the result never has a larger error than minmax on that measure.
"""

from __future__ import annotations

import torch

from modelslim_core.quant.int_affine import compute_qparams, qrange

#: Fractions of each row's range tried (1.0 = minmax); 0.80-1.00 in steps of 0.02.
CLIP_RATIOS = tuple(round(1.0 - 0.02 * i, 2) for i in range(11))


def clip_search_qparams(columns: torch.Tensor, bits: int, symmetric: bool, importance: torch.Tensor | None = None,
                        full_range: bool = False) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and offset per row of `columns` ([..., rows, n], e.g. [out, groups, group_size] for every group of
    a weight at once) with the least importance-weighted squared error; `importance` broadcasts against
    `columns` ([n], or [groups, group_size] for the grouped view). Every row and every candidate ratio are
    evaluated in tensor operations: the only loop is over the CLIP_RATIOS."""
    w = columns.float()
    lo_full, hi_full = w.amin(dim=-1), w.amax(dim=-1)
    weights = torch.ones(w.shape[-1], device=w.device) if importance is None else importance.float().to(w.device)
    low, high = qrange(bits)
    best_error = torch.full(lo_full.shape, float("inf"), device=w.device)
    best_scale = torch.zeros(lo_full.shape, device=w.device)
    best_offset = torch.zeros(lo_full.shape, device=w.device)
    for ratio in CLIP_RATIOS:
        scale, offset = compute_qparams(lo_full * ratio, hi_full * ratio, bits, symmetric, full_range)
        scale_, offset_ = scale.unsqueeze(-1), offset.unsqueeze(-1)
        codes = torch.clamp(torch.round(w / scale_ + offset_), low, high)
        error = (((codes - offset_) * scale_ - w) ** 2 * weights).sum(dim=-1)
        better = error < best_error
        best_error = torch.where(better, error, best_error)
        best_scale = torch.where(better, scale, best_scale)
        best_offset = torch.where(better, offset, best_offset)
    return best_scale, best_offset
