"""Exact int8 × int8 → int32 matrix products on any device, through float BLAS.

Every partial sum of int8 × int8 products over k terms is an integer of magnitude ≤ 128·128·k. float32
represents every integer up to 2^24 exactly and float64 up to 2^53, so a float GEMM whose inputs are the
integer codes returns the exact integer result when 128·128·k ≤ 2^24 (k ≤ 1024) in float32, or for any
realistic k in float64. That is as exact as an int32 kernel and uses the fast float paths everywhere.
"""

from __future__ import annotations

import torch

_FLOAT32_EXACT_K = 2**24 // (128 * 128)


def int8_matmul(x_codes: torch.Tensor, w_codes: torch.Tensor) -> torch.Tensor:
    """x_codes [..., k] (integer-valued) @ w_codes[n, k]ᵀ -> int32-valued tensor [..., n] (returned as float64)."""
    k = w_codes.shape[-1]
    dtype = torch.float32 if k <= _FLOAT32_EXACT_K else torch.float64
    return (x_codes.to(dtype) @ w_codes.to(dtype).T).double()


def grouped_int_matmul(x_codes: torch.Tensor, w_codes: torch.Tensor, groups: int) -> torch.Tensor:
    """Per-group integer products: x_codes [..., k] with w_codes [n, k] split into `groups` runs of k/groups
    consecutive columns -> [..., n, groups] exact integers (float64). groups = 1 is a plain int8_matmul."""
    if groups == 1:
        return int8_matmul(x_codes, w_codes)[..., None]
    x = x_codes.double().reshape(*x_codes.shape[:-1], groups, -1)
    w = w_codes.double().reshape(w_codes.shape[0], groups, -1)
    return torch.einsum("...gk,ngk->...ng", x, w)
