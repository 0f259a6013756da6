"""The FP16 weight compression of W16A16S: few mantissa bits everywhere, full precision where it matters.

A sparse FP16 weight compresses well when its values come from a small alphabet. Each weight
w = ±m·2^e (1 ≤ m < 2, e the FP16 exponent) is therefore rounded (docs/algorithms.md, "Sparsity"):
- e < −14 (an FP16 subnormal): 0;
- −14 ≤ e ≤ −9: only the power of two survives: m → 1 (m ≤ 1.5) or 2 (m > 1.5);
- otherwise m is rounded to `mantissa_bits` (2) fraction bits, to nearest (ties to even).
Then the `keep_fraction` (2%) of positions whose rounding hurts the output most, |w − q(w)|·‖x_j‖ with ‖x_j‖
the RMS of input channel j on the calibration data, keep their full FP16 value — except the small
(e ≤ −9) weights, whose rounding always applies. Zeros stay zeros. Returned values are exactly
representable in FP16.
"""

from __future__ import annotations

import torch

MANTISSA_BITS = 2
KEEP_FRACTION = 0.02
#: Smallest normal FP16 exponent; anything below is flushed to zero.
MIN_EXPONENT = -14
#: Up to this exponent only the power of two is kept.
POWER_OF_TWO_MAX_EXPONENT = -9
_FP16_MAX = torch.finfo(torch.float16).max
_FP16_MAX_EXPONENT = 15


def to_fp16(weight: torch.Tensor) -> torch.Tensor:
    """The weight as FP16 values (held in float32), saturating instead of overflowing to inf."""
    return weight.float().clamp(-_FP16_MAX, _FP16_MAX).half().float()


def split_float(magnitude: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(m, e) with magnitude = m·2^e and 1 ≤ m < 2, exactly (frexp); zeros give (0, -1)."""
    fraction, exponent = torch.frexp(magnitude.float())
    return fraction * 2, (exponent - 1).float()


def round_mantissa(weight: torch.Tensor, mantissa_bits: int = MANTISSA_BITS) -> torch.Tensor:
    """Every weight rounded as the module docstring says (no full-precision exceptions); float32 result."""
    w = to_fp16(weight)
    magnitude = w.abs()
    nonzero = magnitude > 0
    mantissa, exponent = split_float(magnitude)
    steps = 2**mantissa_bits
    rounded = torch.round(mantissa * steps) / steps
    power_of_two = torch.where(mantissa > 1.5, 2.0, 1.0)
    small = exponent <= POWER_OF_TWO_MAX_EXPONENT
    rounded = torch.where(small, power_of_two, rounded)
    result = torch.sign(w) * rounded * torch.exp2(exponent)
    result = torch.where(nonzero & (exponent >= MIN_EXPONENT), result, torch.zeros_like(result))
    largest = (2 - 2.0**-mantissa_bits) * 2.0**_FP16_MAX_EXPONENT  # rounding up past 65504 stays on the grid
    return to_fp16(result.clamp(-largest, largest))


def compress_fp16(
    weight: torch.Tensor,
    input_rms: torch.Tensor,
    keep_fraction: float = KEEP_FRACTION,
    mantissa_bits: int = MANTISSA_BITS,
) -> torch.Tensor:
    """The W16A16S weight: rounded mantissas, with the most output-relevant `keep_fraction` kept at FP16.

    `input_rms` [in] is each input channel's root-mean-square on the calibration data."""
    full = to_fp16(weight)
    rounded = round_mantissa(full, mantissa_bits)
    harm = (full - rounded).abs() * input_rms.float().reshape(1, -1)
    count = int(full.numel() * keep_fraction)
    exponent = split_float(full.abs())[1]
    eligible = (harm > 0) & (exponent > POWER_OF_TWO_MAX_EXPONENT)
    count = min(count, int(eligible.sum()))
    if count == 0:
        return rounded
    scores = torch.where(eligible, harm, torch.full_like(harm, -1.0)).flatten()
    keep = torch.topk(scores, count, sorted=False).indices
    result = rounded.flatten().clone()
    result[keep] = full.flatten()[keep]
    return result.reshape(full.shape)
