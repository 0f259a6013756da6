"""Exact integer GEMM through float32: the per-weight bound, column runs, per-group batches, kernel outputs."""

from __future__ import annotations

import pytest
import torch

from modelslim_core.formats.kernels.int_gemm import FLOAT32_EXACT, GroupedIntWeight, IntWeight
from modelslim_core.formats.kernels.dynamic_int import DynamicIntLinear, quantize_per_token


def exact(x: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
    return (x.to(torch.int64) @ w.to(torch.int64).T).double()


def test_worst_case_codes_split_the_input_dim_into_exact_runs():
    k = 3000
    generator = torch.Generator().manual_seed(0)
    x = torch.randint(-128, -100, (4, k), generator=generator, dtype=torch.int8)
    w = torch.full((3, k), -128, dtype=torch.int8)
    w[1] = torch.randint(-128, -100, (k,), generator=generator, dtype=torch.int8)
    gemm = IntWeight(w)
    assert len(gemm.runs) == 3 and all((end - start) * 128 * 128 < FLOAT32_EXACT for start, end in gemm.runs)
    assert gemm.runs[0][0] == 0 and gemm.runs[-1][1] == k
    assert torch.equal(gemm.matmul(x), exact(x, w))
    # the worst case of one run overflows float32's integers: the split is what keeps the result exact
    assert not torch.equal((x.float() @ w.float().T).double(), exact(x, w))


def test_typical_codes_need_one_float32_gemm_for_a_large_input_dim():
    generator = torch.Generator().manual_seed(0)
    w = torch.clamp(torch.randn(64, 4096, generator=generator) * 20, -127, 127).round().to(torch.int8)
    x = torch.randint(-128, 128, (8, 4096), generator=generator, dtype=torch.int8)
    gemm = IntWeight(w)
    assert gemm.runs == [(0, 4096)]
    assert torch.equal(gemm.matmul(x), exact(x, w))


@pytest.mark.parametrize("groups", [4, 16])
def test_grouped_products_are_exact(groups):
    generator = torch.Generator().manual_seed(groups)
    w = torch.randint(-128, 128, (24, 512), generator=generator, dtype=torch.int8)
    x = torch.randint(-128, 128, (2, 5, 512), generator=generator, dtype=torch.int8)
    expected = torch.einsum("tgk,ngk->tng", x.to(torch.int64).reshape(2, 5, groups, -1).flatten(0, 1),
                            w.to(torch.int64).reshape(24, groups, -1)).double().reshape(2, 5, 24, groups)
    assert torch.equal(GroupedIntWeight(w, groups).matmul(x), expected)


def test_dynamic_kernel_equals_the_float64_formula():
    """Per-group asymmetric int8 weights, per-token activations: the float32 path gives the very same numbers
    as the integer identity evaluated in float64."""
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(-128, 128, (16, 256), generator=generator, dtype=torch.int8)
    scale = torch.rand(16, 4, generator=generator) * 0.01 + 1e-3
    offset = torch.randint(-3, 4, (16, 4), generator=generator).float()
    bias = torch.randn(16, generator=generator)
    x = torch.randn(3, 7, 256, generator=generator)
    y = DynamicIntLinear(codes, scale, offset, bias, act_bits=8)(x)
    x_codes, x_scale = quantize_per_token(x)
    xg = x_codes.double().reshape(3, 7, 1, 4, 64)
    products = (xg * codes.double().reshape(16, 4, 64)).sum(-1) - offset.double() * xg.sum(-1)
    expected = ((products * scale.double()).sum(-1) * x_scale.double()).float() + bias
    assert torch.equal(y, expected)
