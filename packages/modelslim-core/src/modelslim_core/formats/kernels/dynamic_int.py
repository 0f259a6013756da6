"""Dynamic per-token integer activations against integer weights: the arithmetic W8A8_DYNAMIC, W4A8_DYNAMIC,
W4A4_DYNAMIC and W8A8_MIX's prefill share.

x_q = clamp(round(x / s_x), −2^(b−1), 2^(b−1)−1) with s_x = max|x_token| / (2^(b−1)−1); for each weight group
G (the whole row when per channel): y += s_w[n,G] · s_x · (Σ_{k∈G} x_q[k]·W_q[n,k] − z_w[n,G] · Σ_{k∈G} x_q[k]),
then the float bias. The integer sums are exact (int_gemm).
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.quant.int_affine import SCALE_EPS
from modelslim_core.formats.kernels.int_gemm import GroupedIntWeight, IntWeight
from modelslim_core.formats.kernels.shared_input import reuse


def quantize_per_token(x: torch.Tensor, bits: int = 8) -> tuple[torch.Tensor, torch.Tensor]:
    """Integer codes and per-token scales, as the dynamic-quant kernel computes them at run time."""
    hi = 2 ** (bits - 1) - 1
    x = x.float()
    # max|x| per token (exact: a maximum rounds nothing). Through an |x| copy: vector_norm(ord=inf) reads x
    # once but was ~10x slower on CPU, half a dynamic linear's overhead over a float one
    scale = torch.clamp(x.abs().amax(dim=-1, keepdim=True) / hi, min=SCALE_EPS)
    return (x / scale).round_().clamp_(-hi - 1, hi), scale  # in place on the quotient: no copy per step


class DynamicIntLinear(nn.Module):
    """Per-token `act_bits` activations × int codes [out, in] with scale/offset [out, groups]."""

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bias: torch.Tensor | None, act_bits: int):
        super().__init__()
        self.act_bits = act_bits
        self.groups = scale.shape[1]
        self.register_buffer("codes", codes.to(torch.int8))
        self.register_buffer("scale", scale.double())
        self.register_buffer("offset", offset.double())
        self.register_buffer("bias", None if bias is None else bias.float())
        self.has_offset = bool((offset != 0).any())
        # per channel: the [out] columns, so the epilogue needs no singleton group axis to multiply and sum over
        self.register_buffer("scale_column", self.scale[:, 0].contiguous() if self.groups == 1 else None, persistent=False)
        self.register_buffer("offset_column", self.offset[:, 0].contiguous() if self.groups == 1 else None,
                             persistent=False)
        self.gemm = IntWeight(codes, 2 ** (act_bits - 1)) if self.groups == 1 else GroupedIntWeight(codes, self.groups, 2 ** (act_bits - 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        # q/k/v and gate/up quantize the same input: once (shared_input.py), read-only below
        x_codes, x_scale = reuse(x, ("per_token", self.act_bits), lambda t: quantize_per_token(t, self.act_bits))
        if self.groups == 1:
            return self._per_channel(x_codes, x_scale).to(x.dtype)
        products = self.gemm.matmul(x_codes)  # [..., out, groups]
        if self.has_offset:
            group_sums = x_codes.double().reshape(*x_codes.shape[:-1], 1, self.groups, -1).sum(dim=-1)
            products = products - self.offset * group_sums
        y = ((products * self.scale).sum(dim=-1) * x_scale.double()).float()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)

    def _per_channel(self, x_codes: torch.Tensor, x_scale: torch.Tensor) -> torch.Tensor:
        """The per-channel epilogue: the same float64 operations in the same order as the grouped one with one
        group, in place on one float64 copy of the products (same-dtype in-place kernels; mixed-dtype ones
        were slower than the copy). `add_(0.0)` stands for the sum over the single group (the same value,
        -0.0 made +0.0 as a sum makes it)."""
        products = self.gemm.exact_products(x_codes).double()  # [..., out], exact integers
        if self.has_offset:
            products -= self.offset_column * x_codes.double().sum(dim=-1, keepdim=True)
        y = products.mul_(self.scale_column).add_(0.0).mul_(x_scale.double()).float()
        return y if self.bias is None else y.add_(self.bias)
