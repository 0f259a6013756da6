"""Grid searches over smoothing exponents, scored by how well the smoothed layer survives quantization.

A candidate scale s is scored by the relative RMS error of the consumers' output, quantized vs float:
‖Q(x/s)·Q(W·s)ᵀ − x·Wᵀ‖ / ‖x·Wᵀ‖ over the subgraph's calibration rows, with all consumers' weights
concatenated. `flex_smooth_quant` uses int8 symmetric fake quantization per token and per output row;
`flex_awq_ssz` uses the real quantizer of its qconfig. Grids are {0, 0.05, …, 1}; ties go to the later
value. The search uses at most `MAX_SEARCH_ROWS` evenly spaced rows: the optimum is a per-channel
statistic, and tens of thousands of tokens only slow the search down.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import nn

from modelslim_core.quant.int_affine import fake_quantize_per_token_sym
from modelslim_core.quant.quantized_linear import LinearQuantizer

GRID: tuple[float, ...] = tuple(round(0.05 * i, 2) for i in range(21))
MAX_SEARCH_ROWS = 2048


def search_rows(rows: torch.Tensor, limit: int = MAX_SEARCH_ROWS) -> torch.Tensor:
    if rows.shape[0] <= limit:
        return rows
    index = torch.linspace(0, rows.shape[0] - 1, limit).round().long()
    return rows[index]


def relative_rms(approx: torch.Tensor, exact: torch.Tensor) -> float:
    return float((approx - exact).pow(2).mean().sqrt() / exact.pow(2).mean().sqrt().clamp(min=1e-12))


def best_on_grid(score: Callable[[float], float], grid: tuple[float, ...] = GRID,
                 incumbent: tuple[float | None, float] = (None, float("inf"))) -> tuple[float | None, float]:
    """(value, error) of the lowest-error grid value; a later value wins ties; `incumbent` must be beaten or tied."""
    best_value, best_error = incumbent
    for value in grid:
        error = score(value)
        if error <= best_error:
            best_value, best_error = value, error
    return best_value, best_error


class SmoothingSearch:
    """The rows and concatenated consumer weights of one subgraph, with its float output for scoring."""

    def __init__(self, rows: torch.Tensor, targets: tuple[nn.Linear, ...]):
        self.rows = search_rows(rows).float()
        self.targets = targets
        self.weight = torch.cat([t.weight.detach().float().cpu() for t in targets])
        self.exact = self.rows @ self.weight.T

    def int8_error(self, scale: torch.Tensor) -> float:
        """Error with int8 symmetric per-token activations and per-output-row weights."""
        x = fake_quantize_per_token_sym(self.rows / scale, 8)
        w = fake_quantize_per_token_sym(self.weight * scale, 8)
        return relative_rms(x @ w.T, self.exact)

    def quantizer_error(self, scale: torch.Tensor, quantizer: LinearQuantizer) -> float:
        """Error with each consumer, scaled, quantized by `quantizer` exactly as linear_quant would."""
        x = self.rows / scale
        outputs = []
        for index, target in enumerate(self.targets):
            linear = nn.Linear(target.in_features, target.out_features, bias=False)
            linear.weight.data.copy_(target.weight.detach().float().cpu() * scale)
            name = f"search.{index}"
            if quantizer.needs_data:
                calibrating = quantizer.calibrating(name, linear)
                calibrating(x)
                quantized = calibrating.finish()
            else:
                quantized = quantizer.quantize(name, linear)
            outputs.append(quantized(x))
        return relative_rms(torch.cat(outputs, dim=-1), self.exact)
