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


def _grouped_formula(kernel: DynamicIntLinear, x: torch.Tensor) -> torch.Tensor:
    """The grouped epilogue with one group, as DynamicIntLinear computed every per-channel linear before its
    in-place per-channel path: products [..., out, 1], × scale, summed over the group, × s_x, then the bias."""
    x_codes, x_scale = quantize_per_token(x, kernel.act_bits)
    products = kernel.gemm.matmul(x_codes)[..., None]
    if kernel.has_offset:
        products = products - kernel.offset * x_codes.double().reshape(*x_codes.shape[:-1], 1, 1, -1).sum(dim=-1)
    y = ((products * kernel.scale).sum(dim=-1) * x_scale.double()).float()
    return (y if kernel.bias is None else y + kernel.bias).to(x.dtype)


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
def test_per_channel_epilogue_is_bitwise_the_grouped_one(dtype):
    """The per-channel fast path gives the grouped formula's bits, signs of zero included: all-zero and -0.0
    tokens, zero weight rows, -0.0 biases, with and without offsets, 8- and 4-bit activations."""
    generator = torch.Generator().manual_seed(3)
    bits = torch.int16 if dtype == torch.bfloat16 else torch.int32
    for case in range(8):
        out, k = (48, 96) if case % 2 else (33, 640)
        codes = torch.randint(-127, 128, (out, k), generator=generator, dtype=torch.int8)
        codes[:3] = 0
        scale = torch.rand(out, 1, generator=generator) * 0.01 + 1e-6
        offset = torch.zeros(out, 1) if case % 3 else torch.randint(-4, 5, (out, 1), generator=generator).float()
        bias = None if case % 4 == 1 else torch.randn(out, generator=generator)
        if bias is not None:
            bias[:5] = -0.0
        kernel = DynamicIntLinear(codes, scale, offset, bias, act_bits=4 if case == 5 else 8)
        if case % 2 == 0:  # a GEMM that returns -0.0 (BLAS may: accumulators seeded with a -0.0 product)
            exact = kernel.gemm.exact_products
            kernel.gemm.exact_products = lambda c, exact=exact: exact(c).index_fill(-1, torch.arange(4), -0.0)
        x = torch.randn(2, 9, k, generator=generator) * 10.0 ** (case % 5 - 2)
        x[0, 0], x[0, 1], x[1, 2] = 0.0, -0.0, -1e-30
        x = x.to(dtype)
        assert torch.equal(kernel(x).view(bits), _grouped_formula(kernel, x).view(bits)), case
