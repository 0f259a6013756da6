"""MX weight scale methods beyond minmax, and the dual-scale MXFP4 format.

Every method keeps the MX element rules of `mx.py` and only chooses each block's shared exponent E
(elements are x · 2^−E rounded to the element format), except `dualscale`, which adds an outer float32
scale per larger block:
- `mse_round` (MXFP8): per block, E = floor(log2 amax) − 8 or ceil(log2 amax) − 8, whichever gives the
  lower squared error in the block (ties and non-finite errors keep floor, the minmax choice).
- `ceil_x` (MXFP4): E = ceil(log2(amax / c)), the smallest exponent that maps the block maximum to at most
  c (default 7.25): c between 6 and 12 trades clipping of the largest values (scaled values above 6 saturate)
  for finer steps elsewhere. No `emax` is subtracted: c already is the largest scaled value allowed, and
  subtracting it again would push every block maximum to 4·c, far past E2M1's 6 (the reference's code
  agrees; only a comment there says otherwise). With `enable_search`, c runs over search_min..search_max
  in `search_step` steps and the first c with the lowest squared error of the whole weight is kept.
- `fouroversix` (MXFP4): per block, the scale amax/6 or amax/4 (rounded to a power of two, ties of the
  log2 to the odd integer as the reference does), whichever gives the lower block error (/6 on ties).
- `dualscale` (MXFP4, scope `dual_scale`): an outer scale S = amax / 6 per `dual_block_size` input
  columns (float32); the MXFP4 minmax rules then quantize x / S per block of 32 and the result is
  multiplied by S. A block whose maximum is 0 gets S = 1 (the reference divides by zero there).
All candidates are exact powers of two (or S), computed in float32; the errors are float64 sums.
"""

from __future__ import annotations

import math

import torch

from modelslim_core.quant.mx import (
    E8M0_BIAS,
    MXFP4,
    MXFormat,
    _blocks,
    expand_blocks,
    floor_log2,
    mx_dequantize,
    mx_quantize,
    round_elements,
)

EXPONENT_RANGE = (-127, 127)
#: ceil_x defaults and bounds (ext keys).
CEIL_X_DEFAULT = 7.25
CEIL_X_RANGE = (6.0, 12.0)
#: fouroversix: a log2 whose fraction is this close to 0.5 is a tie.
TIE_TOLERANCE = 1e-6


def _quantize_with(x: torch.Tensor, exponent: torch.Tensor, fmt: MXFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Elements of x on the grid of the given per-block exponents (clamped to E8M0) and the biased bytes."""
    exponent = torch.clamp(exponent, *EXPONENT_RANGE).to(torch.int32)
    scaled = torch.ldexp(x.float(), -expand_blocks(exponent, x.shape[-1]))
    return round_elements(scaled, fmt), (exponent + E8M0_BIAS).to(torch.uint8)


def _block_errors(x: torch.Tensor, elements: torch.Tensor, biased: torch.Tensor) -> torch.Tensor:
    """Squared error of each block of 32 (float64 [..., ceil(n/32)])."""
    diff = (mx_dequantize(elements, biased) - x.float()).double()
    return _blocks(diff).pow(2).sum(dim=-1)


def _amax(x: torch.Tensor) -> torch.Tensor:
    return _blocks(x.float()).abs().amax(dim=-1)


def _pick(x: torch.Tensor, fmt: MXFormat, first: torch.Tensor, second: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per block, the second candidate exponent where its error is finite and strictly lower, else the first."""
    q1, b1 = _quantize_with(x, first, fmt)
    q2, b2 = _quantize_with(x, second, fmt)
    e1, e2 = _block_errors(x, q1, b1), _block_errors(x, q2, b2)
    take = torch.isfinite(e2) & ((e2 < e1) | ~torch.isfinite(e1))
    exponent = torch.where(take, torch.clamp(second, *EXPONENT_RANGE), torch.clamp(first, *EXPONENT_RANGE))
    return _quantize_with(x, exponent, fmt)


def mse_round_quantize(x: torch.Tensor, fmt: MXFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """mse_round: floor or ceil of log2(amax), minus emax, per block (see the module docstring)."""
    amax = _amax(x)
    tiny = torch.clamp(amax, min=torch.finfo(torch.float32).tiny)
    floor = floor_log2(tiny)
    exact = torch.ldexp(torch.ones_like(tiny), floor) == tiny
    ceil = torch.where(exact, floor, floor + 1)
    zero = amax == 0
    floor = torch.where(zero, torch.full_like(floor, EXPONENT_RANGE[0]), floor - fmt.emax)
    ceil = torch.where(zero, floor, ceil - fmt.emax)
    return _pick(x, fmt, floor, ceil)


def ceil_x_exponents(x: torch.Tensor, c: float) -> torch.Tensor:
    """E = ceil(log2(amax / c)) per block (zero blocks −127), clamped to E8M0."""
    amax = _amax(x).double()
    ratio = torch.clamp(amax / c, min=2.0**-200)
    mantissa, exponent = torch.frexp(ratio)  # ratio = m · 2^e, m in [0.5, 1)
    ceil = torch.where(mantissa == 0.5, exponent - 1, exponent)
    ceil = torch.where(amax > 0, ceil, torch.full_like(ceil, EXPONENT_RANGE[0]))
    return torch.clamp(ceil, *EXPONENT_RANGE).to(torch.int32)


def ceil_x_candidates(search_min: float, search_max: float, step: float) -> list[float]:
    """search_min, search_min + step, ... up to search_max (inclusive within rounding)."""
    count = int(math.floor((search_max - search_min) / step + 1e-9)) + 1
    return [search_min + i * step for i in range(count)]


def ceil_x_quantize(
    x: torch.Tensor, c: float = CEIL_X_DEFAULT, search: list[float] | None = None
) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MXFP4 elements and exponents by ceil_x, and the c used (the first best of `search` when given)."""
    best: tuple[float, torch.Tensor, torch.Tensor, float] | None = None
    for candidate in search or [c]:
        elements, biased = _quantize_with(x, ceil_x_exponents(x, candidate), MXFP4)
        error = float(_block_errors(x, elements, biased).sum())
        if best is None or error < best[0]:
            best = (error, elements, biased, candidate)
    _, elements, biased, chosen = best
    return elements, biased, chosen


def _round_log2_ties_to_odd(scale: torch.Tensor) -> torch.Tensor:
    """round(log2 scale), a fraction within TIE_TOLERANCE of 0.5 going to the odd neighbour; scale <= 0 -> 0."""
    log = torch.log2(torch.where(scale > 0, scale.double(), torch.ones_like(scale, dtype=torch.float64)))
    base = torch.floor(log)
    fraction = log - base
    tie = (fraction - 0.5).abs() <= TIE_TOLERANCE
    rounded = torch.where(fraction > 0.5, base + 1, base)
    tied = torch.where(base.remainder(2) == 0, base + 1, base)
    return torch.where(tie, tied, rounded).to(torch.int32)


def fouroversix_quantize(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, float]:
    """MXFP4 by fouroversix; also returns the share of blocks that chose amax/4."""
    amax = _amax(x)
    six, four = _round_log2_ties_to_odd(amax / 6), _round_log2_ties_to_odd(amax / 4)
    q6, b6 = _quantize_with(x, six, MXFP4)
    q4, b4 = _quantize_with(x, four, MXFP4)
    use_four = _block_errors(x, q4, b4) < _block_errors(x, q6, b6)
    exponent = torch.where(use_four, four, six)
    elements, biased = _quantize_with(x, exponent, MXFP4)
    return elements, biased, float(use_four.float().mean()) if use_four.numel() else 0.0


def dual_scales(x: torch.Tensor, dual_block_size: int) -> torch.Tensor:
    """S = amax / 6 per `dual_block_size` columns along the last dim (float32 [..., n / dual]); 0 -> 1."""
    blocks = x.float().reshape(*x.shape[:-1], -1, dual_block_size)
    scale = blocks.abs().amax(dim=-1) / MXFP4.max_value
    return torch.where(scale > 0, scale, torch.ones_like(scale))


def expand_dual(scale: torch.Tensor, dual_block_size: int) -> torch.Tensor:
    return scale.repeat_interleave(dual_block_size, dim=-1)


def dual_scale_quantize(x: torch.Tensor, dual_block_size: int) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Elements and biased exponents of x / S (MXFP4 minmax) and S (float32 [..., n / dual_block_size])."""
    scale = dual_scales(x, dual_block_size)
    elements, biased = mx_quantize(x.float() / expand_dual(scale, dual_block_size), MXFP4)
    return elements, biased, scale


def dual_scale_dequantize(elements: torch.Tensor, biased: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    dual = elements.shape[-1] // scale.shape[-1]
    return mx_dequantize(elements, biased) * expand_dual(scale.float(), dual)


def dual_scale_fake_quantize(x: torch.Tensor, dual_block_size: int) -> torch.Tensor:
    """Dynamic dual-scale MXFP4 (activations): every call computes its own S and block exponents."""
    pad = (-x.shape[-1]) % dual_block_size
    padded = torch.nn.functional.pad(x.float(), (0, pad))
    result = dual_scale_dequantize(*dual_scale_quantize(padded, dual_block_size))
    return result[..., : x.shape[-1]].to(x.dtype)


__all__ = [
    "ceil_x_candidates",
    "ceil_x_exponents",
    "ceil_x_quantize",
    "dual_scale_dequantize",
    "dual_scale_fake_quantize",
    "dual_scale_quantize",
    "fouroversix_quantize",
    "mse_round_quantize",
]
