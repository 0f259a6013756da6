"""SSZ: iterative least-squares refinement of per-channel symmetric integer weight scales (int8/int4).

Start from the minmax scales. Each step takes the integer codes q of the current scales and refits every
row's scale to the least-squares optimum for those codes, s = Σ w·q / Σ q², then requantizes. A row's
best scale (lowest mean squared weight error) is kept; the loop stops after `ext.step` iterations
(default 50, as the reference's code) or once no row improves by more than a relative 1e-10.
The refit can shrink the scale below max|w|/(2^(b−1)−1), i.e. clip a row's outlier to gain resolution for
the rest, which is exactly the trade minmax cannot make. Vectorised over rows; the only loop is over steps.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.quant.base import WeightQuantizer
from modelslim_core.quant.int_affine import SCALE_EPS, qrange
from modelslim_core.quant.minmax import minmax_weight_qparams, quantize_int_weight
from modelslim_core.quant.schemes import BITS

DEFAULT_STEPS = 50
_CONVERGED = 1e-10


def _codes(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    lo, hi = qrange(bits)
    return torch.clamp(torch.round(w / scale[:, None]), lo, hi)


def _row_mse(w: torch.Tensor, scale: torch.Tensor, bits: int) -> torch.Tensor:
    return (w - _codes(w, scale, bits) * scale[:, None]).pow(2).mean(dim=1)


def ssz_scales(weight: torch.Tensor, bits: int, steps: int = DEFAULT_STEPS) -> torch.Tensor:
    """Per-row symmetric scales [out] minimising the weight MSE found by the SSZ iteration."""
    w = weight.detach().float()
    current, _ = minmax_weight_qparams(w, bits, symmetric=True)
    best, best_mse = current.clone(), _row_mse(w, current, bits)
    for _ in range(steps):
        codes = _codes(w, current, bits)
        current = (w * codes).sum(dim=1) / torch.clamp(codes.pow(2).sum(dim=1), min=1e-30)
        current = torch.clamp(current, min=SCALE_EPS)
        mse = _row_mse(w, current, bits)
        gain = best_mse - mse
        if bool(((gain / torch.clamp(best_mse, min=1e-4) < _CONVERGED) | (gain.abs() < _CONVERGED)).all()):
            break
        improved = mse < best_mse
        best, best_mse = torch.where(improved, current, best), torch.where(improved, mse, best_mse)
    return best


class SSZWeight(WeightQuantizer):
    """ssz for int8/int4 per-channel symmetric weights."""

    def quantize(self, weight: torch.Tensor, hessian: torch.Tensor | None = None, name: str = "") -> nn.Module:
        bits = BITS[self.qconfig.dtype]
        scale = ssz_scales(weight, bits, self.qconfig.ext.get("step", DEFAULT_STEPS))
        return quantize_int_weight(weight, scale, torch.zeros_like(scale), bits, 0)
