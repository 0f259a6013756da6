"""MX (OCP microscaling) block formats: MXFP8 (E4M3 elements) and MXFP4 (E2M1 elements).

Every block of 32 consecutive values along the last (input) dimension shares one power-of-two scale
2^E, stored as an E8M0 byte E + 127. E = floor(log2(block amax)) − emax, where emax is the exponent of
the element format's largest normal (8 for E4M3, 2 for E2M1), so the block maximum lands in the top
binade of the element format. For MXFP4 the amax is first multiplied by 8/7 (as the reference does):
without it a block whose scaled maximum lies in [7, 8) would be clipped to 6; with it such a block moves
one exponent up and its maximum rounds to 4 instead, which halves the worst error. E is kept in the E8M0
range [−127, 127] (the reference lets MXFP4 exponents leave it, which wraps the stored byte).
Elements are x · 2^−E rounded half away from zero to the element format (per-element exponent,
subnormals included) and saturated at its maximum. All arithmetic is float32 and exact: only powers of two
scale, and frexp gives floor(log2) without rounding.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F

from modelslim_core.quant.schemes import MX_BLOCK

E8M0_BIAS = 127
_EXPONENT_RANGE = (-127, 127)


@dataclass(frozen=True)
class MXFormat:
    """An MX element format: mantissa bits, smallest normal exponent, largest normal exponent and value."""

    name: str
    mantissa_bits: int
    min_exponent: int
    emax: int
    max_value: float
    amax_factor: float = 1.0


MXFP8 = MXFormat("mxfp8", mantissa_bits=3, min_exponent=-6, emax=8, max_value=448.0)
MXFP4 = MXFormat("mxfp4", mantissa_bits=1, min_exponent=0, emax=2, max_value=6.0, amax_factor=8 / 7)
MX_FORMATS = {fmt.name: fmt for fmt in (MXFP8, MXFP4)}


def floor_log2(x: torch.Tensor) -> torch.Tensor:
    """floor(log2(x)) for x > 0, exactly (x = m · 2^e with m in [0.5, 1) gives e − 1)."""
    return torch.frexp(x)[1] - 1


def round_elements(v: torch.Tensor, fmt: MXFormat) -> torch.Tensor:
    """v (already divided by the block scale) rounded half away from zero to `fmt`, saturated; −0 stays −0."""
    magnitude = v.abs()
    exponent = torch.clamp(floor_log2(torch.clamp(magnitude, min=torch.finfo(torch.float32).tiny)), min=fmt.min_exponent)
    step = torch.ldexp(torch.ones_like(magnitude), exponent - fmt.mantissa_bits)
    rounded = torch.clamp(torch.floor(magnitude / step + 0.5) * step, max=fmt.max_value)
    return torch.copysign(rounded, v)


def _blocks(x: torch.Tensor) -> torch.Tensor:
    """[..., n] -> [..., ceil(n/32), 32], zero-padded (padding never raises a block's amax)."""
    pad = (-x.shape[-1]) % MX_BLOCK
    return F.pad(x, (0, pad)).reshape(*x.shape[:-1], -1, MX_BLOCK)


def shared_exponents(x: torch.Tensor, fmt: MXFormat) -> torch.Tensor:
    """Unbiased shared exponent E per block of 32 along the last dim (int32 [..., ceil(n/32)]); zero blocks get −127."""
    amax = _blocks(x.float()).abs().amax(dim=-1) * fmt.amax_factor
    exponent = floor_log2(torch.clamp(amax, min=torch.finfo(torch.float32).tiny)) - fmt.emax
    exponent = torch.where(amax > 0, exponent, torch.full_like(exponent, _EXPONENT_RANGE[0]))
    return torch.clamp(exponent, *_EXPONENT_RANGE).to(torch.int32)


def expand_blocks(per_block: torch.Tensor, n: int) -> torch.Tensor:
    """[..., ceil(n/32)] -> [..., n]: each block's value repeated over its columns."""
    return per_block.repeat_interleave(MX_BLOCK, dim=-1)[..., :n]


def mx_quantize(x: torch.Tensor, fmt: MXFormat) -> tuple[torch.Tensor, torch.Tensor]:
    """Element values (float32, exactly representable in `fmt`) and biased E8M0 exponents (uint8)."""
    exponent = shared_exponents(x, fmt)
    scaled = torch.ldexp(x.float(), -expand_blocks(exponent, x.shape[-1]))
    return round_elements(scaled, fmt), (exponent + E8M0_BIAS).to(torch.uint8)


def mx_dequantize(elements: torch.Tensor, biased_exponents: torch.Tensor) -> torch.Tensor:
    """elements · 2^(stored − 127), float32."""
    exponent = biased_exponents.to(torch.int32) - E8M0_BIAS
    return torch.ldexp(elements.float(), expand_blocks(exponent, elements.shape[-1]))


def mx_fake_quantize(x: torch.Tensor, fmt: MXFormat) -> torch.Tensor:
    """x on the MX grid (dynamic activations: every call computes its own block exponents), in x's dtype."""
    elements, exponents = mx_quantize(x, fmt)
    return mx_dequantize(elements, exponents).to(x.dtype)
