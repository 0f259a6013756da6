"""Integer affine quantization, the arithmetic every integer scheme shares.

Conventions follow the Ascend kernels (see docs/algorithms.md, "Integer affine core"): the observed range is widened
to contain zero; symmetric scale = max|x| / (2^(b-1)-1) with offset 0; asymmetric scale = (max-min)/(2^b-1)
with a signed offset round(-min/scale) - 2^(b-1); codes are clamped to the full signed range; rounding is
half-to-even; x ≈ (q - offset)·scale. Everything is computed in float32 whatever the model dtype, so
results do not depend on bf16 rounding of intermediate values.
"""

from __future__ import annotations

import torch

#: Smallest scale; keeps all-zero channels well defined (their codes are 0).
SCALE_EPS = torch.finfo(torch.float32).eps


def qrange(bits: int) -> tuple[int, int]:
    """Signed code range for `bits`."""
    return -(2 ** (bits - 1)), 2 ** (bits - 1) - 1


def compute_qparams(
    min_val: torch.Tensor, max_val: torch.Tensor, bits: int, symmetric: bool, full_range: bool = False
) -> tuple[torch.Tensor, torch.Tensor]:
    """Scale and offset (both float32, same shape as the inputs) for an observed range.

    `full_range` (symmetric only): scale = max|x| / (2^b − 1)/2 instead of / (2^(b-1) − 1), so the grid spans
    all 2^b codes: a negative extreme lands on −2^(b-1), a positive one on 2^(b-1) − ½, rounded down to the
    top code. At 4 bits that is a 7% finer step (absmax/7.5 against /7) for half a step of error on one
    positive extreme per row/group."""
    min_val = torch.clamp(min_val.float(), max=0.0)
    max_val = torch.clamp(max_val.float(), min=0.0)
    if symmetric:
        levels = (2**bits - 1) / 2 if full_range else 2 ** (bits - 1) - 1
        scale = torch.maximum(-min_val, max_val) / levels
        scale = torch.clamp(scale, min=SCALE_EPS)
        return scale, torch.zeros_like(scale)
    scale = torch.clamp((max_val - min_val) / (2**bits - 1), min=SCALE_EPS)
    offset = torch.round(-min_val / scale) + qrange(bits)[0]
    return scale, offset


def quantize(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> torch.Tensor:
    """Integer codes (int8 container) of `x`; scale/offset broadcast against x."""
    lo, hi = qrange(bits)
    codes = x.to(torch.float32, copy=True)  # one float32 buffer, updated in place (same arithmetic, fewer copies)
    codes.div_(scale)
    if offset.any():  # adding a zero offset changes no code (-0 + 0 = +0 still rounds to code 0): skip the pass
        codes.add_(offset)
    codes.round_().clamp_(lo, hi)
    return codes.to(torch.int8)


def quantize_measured(
    x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int
) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """(codes, x in float32, dequantized codes minus x): `quantize` and the weight-error statistics' inputs from
    one float32 copy of x and one working buffer, which becomes the error in place. The codes are `quantize`'s
    bit for bit (same division, offset, rounding, clamping) and the error is `dequantize(codes) - x` exactly
    (the rounded values are the codes as floats)."""
    lo, hi = qrange(bits)
    x32 = x.float()  # x itself when it is float32: only read
    values = x32 / scale
    shifted = bool(offset.any())
    if shifted:
        values.add_(offset)
    values.round_().clamp_(lo, hi)
    codes = values.to(torch.int8)
    if shifted:
        values.sub_(offset)
    return codes, x32, values.mul_(scale).sub_(x32)


def dequantize(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Float32 values represented by `codes`."""
    return (codes.float() - offset) * scale


def fake_quantize(x: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int) -> torch.Tensor:
    """x rounded onto the quantization grid, in x's dtype (no int8 round trip: stays vectorised)."""
    lo, hi = qrange(bits)
    codes = torch.clamp(torch.round(x.float() / scale + offset), lo, hi)
    return ((codes - offset) * scale).to(x.dtype)


def fake_quantize_per_token_sym(x: torch.Tensor, bits: int) -> torch.Tensor:
    """Dynamic symmetric per-token quantization, as the serving kernel does it at run time."""
    hi = 2 ** (bits - 1) - 1
    xf = x.float()
    if x.requires_grad:  # autograd needs the intermediate values the in-place version overwrites
        scale = torch.clamp(xf.abs().amax(dim=-1, keepdim=True) / hi, min=SCALE_EPS)
        return (torch.clamp(torch.round(xf / scale), -hi - 1, hi) * scale).to(x.dtype)
    # One float32 buffer updated in place (it runs on every dynamic linear's input in every forward): the same
    # arithmetic, bit for bit, without three more activation-sized temporaries.
    scale = xf.abs().amax(dim=-1, keepdim=True).div_(hi).clamp_(min=SCALE_EPS)
    codes = xf / scale
    return codes.round_().clamp_(-hi - 1, hi).mul_(scale).to(x.dtype)


def group_view(x: torch.Tensor, groups: int) -> torch.Tensor:
    """[out, in] -> [out, groups, in/groups]: consecutive input columns of a row form a group (1 = per channel)."""
    return x.reshape(x.shape[0], groups, -1)


def dequantize_grouped(codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor) -> torch.Tensor:
    """Float32 [out, in] of grouped codes; scale/offset are [out, groups] (groups = 1 for per-channel)."""
    groups = scale.shape[1]
    values = group_view(codes.to(torch.float32, copy=True), groups)
    if offset.any():  # symmetric grids: subtracting a zero offset changes no value
        values.sub_(offset[..., None])
    values.mul_(scale[..., None])  # in place: one float32 copy of a large weight, not two
    return values.reshape(codes.shape)
