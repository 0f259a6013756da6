"""AutoRound (SignRound): learn each weight's rounding direction and each row's clipping range by signed
gradient descent on the output error of a whole block.

A `SignRoundLinear` holds a frozen float weight W and, per output row (or per group), min/max range
multipliers α, β ∈ [0, 1] (init 1: the minmax grid) and, per weight, a rounding offset V ∈ [−0.5, 0.5]
(init 0: round to nearest). Its weight is the fake-quantized
    lo = min(W_g, 0)·α, hi = max(W_g, 0)·β, s = §3.1 scale of [lo, hi] (z = asymmetric offset, else 0),
    Ŵ = (clamp(round(W/s + V + z), qmin, qmax) − z)·s
with straight-through rounding, so gradients reach V, α and β. `tune_signround` then minimises the mean
squared error between the block's outputs and its float outputs on the calibration samples: each
iteration accumulates the gradient over a batch of up to 8 samples (a seeded permutation, so runs are
deterministic), takes one SignSGD step on every parameter (size 1/iters, decaying linearly to 0 over the
iterations as in AutoRound's own scheduler: a constant step keeps flipping the same roundings back and
forth), clamps them to their ranges,
and the parameters with the lowest loss seen (the minmax start included) are kept. With more samples than
one batch, losses of different batches are compared through an exponential moving average (β = 0.7).

Choices that differ from the reference (docs/algorithms.md, "AutoRound"): the loss is the mean squared
error it is named after (the reference computes an L1 loss under that name); scales stay float32 unless
`ext.scale_dtype` asks otherwise (the ascendv1 scales are float32, so rounding them to bf16 only loses
accuracy). Activations are not fake-quantized while tuning, as in the reference.
"""

from __future__ import annotations

import logging
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from modelslim_core.quant.int_affine import SCALE_EPS, group_view, qrange
from modelslim_core.quant.weight_formats import IntWeight

logger = logging.getLogger(__name__)

BATCH_SIZE = 8
EMA_BETA = 0.7
ROUNDING_LIMIT = 0.5
SCALE_DTYPES = {"float32": torch.float32, "float16": torch.float16, "bfloat16": torch.bfloat16}


def _round_ste(x: torch.Tensor) -> torch.Tensor:
    """round() forward, identity backward (straight-through estimator)."""
    return x + (torch.round(x) - x).detach()


def _cast_ste(x: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
    """x rounded to `dtype`'s precision forward, identity backward."""
    if dtype == torch.float32:
        return x
    return x + (x.to(dtype).float() - x).detach()


@dataclass(frozen=True)
class SignRoundGrid:
    """The integer grid being tuned: bits, symmetry, group size (0 = per channel), precision of the scales."""

    bits: int
    symmetric: bool
    group_size: int = 0
    scale_dtype: torch.dtype = torch.float32


class SignRoundLinear(nn.Module):
    """A linear whose weight is fake-quantized with learnable rounding offsets and range multipliers."""

    replaces_linear = True

    def __init__(self, linear: nn.Linear, grid: SignRoundGrid, tune_rounding: bool = True, tune_range: bool = True):
        super().__init__()
        self.grid = grid
        weight = linear.weight.detach().float()
        out, in_features = weight.shape
        self.groups = in_features // grid.group_size if grid.group_size else 1
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if linear.bias is None else linear.bias.detach())
        grouped = group_view(weight, self.groups)
        self.register_buffer("low", grouped.amin(dim=-1).clamp(max=0))
        self.register_buffer("high", grouped.amax(dim=-1).clamp(min=0))
        self.rounding = nn.Parameter(torch.zeros_like(weight), requires_grad=tune_rounding)
        self.min_scale = nn.Parameter(torch.ones(out, self.groups, device=weight.device), requires_grad=tune_range)
        self.max_scale = nn.Parameter(torch.ones(out, self.groups, device=weight.device), requires_grad=tune_range)

    def tunable(self) -> list[nn.Parameter]:
        return [p for p in (self.rounding, self.min_scale, self.max_scale) if p.requires_grad]

    def clamp_(self) -> None:
        """Keep the parameters in their ranges after a step."""
        with torch.no_grad():
            self.rounding.clamp_(-ROUNDING_LIMIT, ROUNDING_LIMIT)
            self.min_scale.clamp_(0, 1)
            self.max_scale.clamp_(0, 1)

    def qparams(self) -> tuple[torch.Tensor, torch.Tensor]:
        """Scale and offset [out, groups] of the current range multipliers (differentiable)."""
        bits = self.grid.bits
        low, high = self.low * self.min_scale, self.high * self.max_scale
        if self.grid.symmetric:
            scale = torch.maximum(-low, high) / (2 ** (bits - 1) - 1)
            scale = _cast_ste(scale.clamp(min=SCALE_EPS), self.grid.scale_dtype)
            return scale, torch.zeros_like(scale)
        scale = _cast_ste(((high - low) / (2**bits - 1)).clamp(min=SCALE_EPS), self.grid.scale_dtype)
        offset = _round_ste(-low / scale) + qrange(bits)[0]
        return scale, offset

    def _codes(self, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
        lo, hi = qrange(self.grid.bits)
        shifted = group_view(self.weight, self.groups) / scale[..., None] + group_view(self.rounding, self.groups)
        return torch.clamp(_round_ste(shifted + offset[..., None]), lo, hi)

    def quantized_weight(self) -> torch.Tensor:
        scale, offset = self.qparams()
        values = (self._codes(scale, offset) - offset[..., None]) * scale[..., None]
        return values.reshape(self.weight.shape)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.quantized_weight().to(x.dtype), bias)

    @torch.no_grad()
    def export(self) -> IntWeight:
        """The tuned integer weight; its dequantized values equal `quantized_weight()` exactly."""
        scale, offset = self.qparams()
        codes = self._codes(scale, offset).reshape(self.weight.shape)
        return IntWeight(codes.to(torch.int8), scale, offset, self.grid.bits, self.grid.group_size)


@dataclass(frozen=True)
class TuneResult:
    initial_loss: float
    best_loss: float
    best_iteration: int


def _batches(samples: int, iters: int, seed: int) -> list[list[int]]:
    """The sample indices of each iteration: all samples if they fit one batch, else a seeded permutation cycled."""
    if samples <= BATCH_SIZE:
        return [list(range(samples))] * (iters + 1)
    generator = torch.Generator().manual_seed(seed)
    order: list[int] = []
    while len(order) < (iters + 1) * BATCH_SIZE:
        order += torch.randperm(samples, generator=generator).tolist()
    return [order[i * BATCH_SIZE : (i + 1) * BATCH_SIZE] for i in range(iters + 1)]


def _batch_loss(forward: Callable[[int], torch.Tensor], targets: list[torch.Tensor], batch: list[int], backward: bool) -> float:
    """Mean squared error over every element of the batch's outputs; gradients accumulate when `backward`."""
    total_elements = sum(targets[i].numel() for i in batch)
    total = 0.0
    for i in batch:
        with torch.set_grad_enabled(backward):
            loss = (forward(i).float() - targets[i].float()).pow(2).sum() / total_elements
        if backward:
            loss.backward()
        total += float(loss.detach())
    return total


def tune_signround(
    forward: Callable[[int], torch.Tensor],
    targets: list[torch.Tensor],
    layers: list[SignRoundLinear],
    iters: int,
    seed: int = 0,
) -> TuneResult:
    """SignSGD on every tunable parameter of `layers`, minimising the block output MSE; keeps the best state.

    `forward(i)` runs the block (containing `layers`) on calibration sample i and returns its output;
    `targets[i]` is the float block's output for that sample. Gradients are enabled here, whatever the caller."""
    params = [p for layer in layers for p in layer.tunable()]
    batches = _batches(len(targets), iters, seed)
    exact = len(targets) <= BATCH_SIZE
    lr = 1.0 / iters
    best_state = [p.detach().clone() for p in params]
    best_score, best_iteration, initial, smoothed = float("inf"), 0, 0.0, None
    with torch.enable_grad():
        for iteration, batch in enumerate(batches):
            last = iteration == iters
            for p in params:
                p.grad = None
            loss = _batch_loss(forward, targets, batch, backward=not last and bool(params))
            smoothed = loss if smoothed is None or exact else EMA_BETA * smoothed + (1 - EMA_BETA) * loss
            if iteration == 0:
                initial = loss
            if smoothed < best_score:
                best_score, best_iteration = smoothed, iteration
                best_state = [p.detach().clone() for p in params]
            if last or not params:
                break
            with torch.no_grad():
                for p in params:
                    if p.grad is not None:
                        p -= lr * (1 - iteration / iters) * torch.sign(p.grad)
            for layer in layers:
                layer.clamp_()
    with torch.no_grad():
        for p, value in zip(params, best_state):
            p.copy_(value)
            p.grad = None
    return TuneResult(initial, best_score, best_iteration)
