"""Exact integer matrix products (int8/int4 codes) on any device, through float32 BLAS.

float32 represents every integer up to 2^24 exactly. In a GEMM of integer codes every partial sum, in any
summation order or blocking, is bounded by Σ_k |x_k|·|w_nk| ≤ max|x| · max_n Σ_k |w_nk|; when that bound
stays below 2^24 the float32 result IS the integer result. `IntWeight` measures the bound once per weight
(from its actual codes, not the worst case 128·128·k) and splits the input dim into the fewest runs of
columns that each respect it; the per-run products are summed in float64 (exact for any realistic size).
Typical int8 weights need one run up to k ≈ 4-8k, so most linears cost one float32 GEMM.
"""

from __future__ import annotations

import torch
from torch import nn

FLOAT32_EXACT = 2**24


def _column_runs(w_codes: torch.Tensor, act_bound: int) -> list[tuple[int, int]]:
    """The fewest consecutive column runs [start, end) whose worst-case partial sums stay exact in float32."""
    k = w_codes.shape[-1]
    if k == 0:
        return [(0, 0)]
    cumulative = w_codes.to(torch.int64).abs().cumsum(dim=-1)  # [n, k]: Σ_{j<=k} |w_nj| per row
    runs, start = [], 0
    while start < k:
        base = cumulative[:, start - 1:start] if start else torch.zeros_like(cumulative[:, :1])
        within = ((cumulative[:, start:] - base).amax(dim=0) * act_bound) < FLOAT32_EXACT  # [k - start]
        length = int(within.to(torch.int8).cumprod(dim=0).sum())
        end = start + max(length, 1)  # one column alone is always exact (128·128 < 2^24)
        runs.append((start, end))
        start = end
    return runs


def abs_row_sums(weight: torch.Tensor) -> torch.Tensor:
    """Σ_k |w_nk| per row of float32 integer codes, exact: float32 while every sum fits its 2^24 integers
    (|code| ≤ 128, so k ≤ 2^17), else float64. One reduction, no int64 copy of the weight (that copy, its abs
    and a cumulative sum were most of a checkpoint's load)."""
    wide = weight.shape[-1] * 128 >= FLOAT32_EXACT
    return torch.linalg.vector_norm(weight.double() if wide else weight, ord=1, dim=-1)


class IntWeight(nn.Module):
    """Integer weight codes [n, k] prepared once for exact products with integer activations of |x| ≤ act_bound.

    A module so that `.to(device)` moves the prepared float32 copy with the kernel that owns it; the copy is
    a non-persistent buffer (the checkpoint's int8 codes stay the kernel's state)."""

    def __init__(self, w_codes: torch.Tensor, act_bound: int = 128):
        super().__init__()
        weight = w_codes.to(torch.float32)  # exact: codes are small integers
        self.register_buffer("codes_f32", weight, persistent=False)  # [n, k]; products use its transpose (a view)
        rows = abs_row_sums(weight)
        #: the largest |x·Wᵀ| any activation codes within act_bound can produce
        self.bound = int(rows.max()) * act_bound if rows.numel() else 0
        # one run when even the largest row's full sum is exact (typical weights); else the column split
        self.runs = [(0, weight.shape[-1])] if self.bound < FLOAT32_EXACT else _column_runs(w_codes, act_bound)

    @property
    def transposed(self) -> torch.Tensor:
        """The float32 codes as [k, n] (a view of `codes_f32`: BLAS reads the transpose in place)."""
        return self.codes_f32.T

    def matmul(self, x_codes: torch.Tensor) -> torch.Tensor:
        """x_codes [..., k] (integer-valued) -> exact x·Wᵀ [..., n] as float64."""
        return self.exact_products(x_codes).double()

    def exact_products(self, x_codes: torch.Tensor) -> torch.Tensor:
        """x·Wᵀ [..., n], exact: float32 when one run holds it (every value an integer below 2^24), else float64.
        A caller that promotes it in its next operation saves the float64 copy `matmul` makes."""
        x = x_codes.to(torch.float32)
        if len(self.runs) == 1:
            return x @ self.transposed
        total = None
        for start, end in self.runs:
            part = (x[..., start:end] @ self.transposed[start:end]).double()
            total = part if total is None else total + part
        return total


def int8_matmul(x_codes: torch.Tensor, w_codes: torch.Tensor) -> torch.Tensor:
    """x_codes [..., k] (integer-valued) @ w_codes[n, k]ᵀ -> int32-valued tensor [..., n] (returned as float64)."""
    return IntWeight(w_codes).matmul(x_codes)


def grouped_int_matmul(x_codes: torch.Tensor, w_codes: torch.Tensor, groups: int) -> torch.Tensor:
    """Per-group integer products: x_codes [..., k] with w_codes [n, k] split into `groups` runs of k/groups
    consecutive columns -> [..., n, groups] exact integers (float64). groups = 1 is a plain int8_matmul."""
    if groups == 1:
        return int8_matmul(x_codes, w_codes)[..., None]
    return GroupedIntWeight(w_codes, groups).matmul(x_codes)


class GroupedIntWeight(nn.Module):
    """Integer codes [n, k] in `groups` runs of k/groups columns, for per-group products in one batched GEMM.

    A group of g columns is exact in float32 while 128·128·g < 2^24 (g ≤ 1024, every real group size);
    larger groups fall back to one exact IntWeight per group."""

    def __init__(self, w_codes: torch.Tensor, groups: int, act_bound: int = 128):
        super().__init__()
        n, k = w_codes.shape
        self.groups = groups
        grouped = w_codes.reshape(n, groups, k // groups).to(torch.float32)
        largest = int(abs_row_sums(grouped).max()) if grouped.numel() else 0
        exact = act_bound * largest < FLOAT32_EXACT
        batched = grouped.permute(1, 2, 0).contiguous() if exact else None  # [groups, k/groups, n]
        self.register_buffer("batched", batched, persistent=False)
        self.per_group = nn.ModuleList([] if exact else [IntWeight(w_codes.reshape(n, groups, -1)[:, g], act_bound)
                                                         for g in range(groups)])

    def matmul(self, x_codes: torch.Tensor) -> torch.Tensor:
        """x_codes [..., k] -> exact per-group products [..., n, groups] as float64."""
        lead = x_codes.shape[:-1]
        x = x_codes.to(torch.float32).reshape(-1, self.groups, x_codes.shape[-1] // self.groups)  # [t, G, g]
        if self.batched is not None:
            products = torch.bmm(x.transpose(0, 1), self.batched)  # [G, t, n]
            return products.permute(1, 2, 0).double().reshape(*lead, -1, self.groups)
        parts = [weight.matmul(x[:, g]) for g, weight in enumerate(self.per_group)]  # each [t, n]
        return torch.stack(parts, dim=-1).reshape(*lead, -1, self.groups)
