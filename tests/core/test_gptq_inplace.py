"""GPTQ's in-place Hessian work (take, permute, factorise) gives the very bits of the out-of-place formulas,
with one Hessian-sized buffer of extra memory instead of five."""

from __future__ import annotations

import pytest
import torch

from modelslim_core.errors import QuantizationError
from modelslim_core.quant.gptq import (GramCache, HessianAccumulator, gptq_quantize, inverse_hessian_factor,
                                       permute_columns_, permute_rows_)
from modelslim_runners.memory import peak_since_reset, reset_peak_rss, rss_bytes


def out_of_place_factor(hessian: torch.Tensor, percdamp: float) -> torch.Tensor:
    """The factorisation as written before it went in place: damped copy, Cholesky, inverse, upper Cholesky."""
    damp = percdamp * torch.diag(hessian).mean()
    for _ in range(5):
        damped = hessian.clone()
        damped.diagonal().add_(damp)
        lower, info = torch.linalg.cholesky_ex(damped)
        if info == 0:
            upper, info = torch.linalg.cholesky_ex(torch.cholesky_inverse(lower), upper=True)
            if info == 0:
                return upper
        damp = damp * 10
    raise AssertionError("not factorisable")


def gram_hessian(width: int, rows: int, seed: int = 0) -> torch.Tensor:
    x = torch.randn(rows, width, generator=torch.Generator().manual_seed(seed))
    x[:, ::7] *= 20  # a few loud channels, as in real activations
    accumulator = HessianAccumulator(width, torch.device("cpu"))
    accumulator.update(x)
    return accumulator.hessian()


@pytest.mark.parametrize("width", [96, 1100])  # 1100: the blocked Gram product (GRAM_SPLIT_FROM)
def test_in_place_factor_is_bit_identical_and_leaves_the_hessian(width):
    hessian = gram_hessian(width, width + 40)
    before = hessian.clone()
    upper = inverse_hessian_factor(hessian, 0.01, "layer")
    assert torch.equal(upper, out_of_place_factor(before, 0.01))
    assert torch.equal(hessian, before)  # the damping on the diagonal is restored exactly


def test_in_place_factor_retries_with_more_damping_from_the_original_hessian(caplog):
    x = torch.randn(8, 40, generator=torch.Generator().manual_seed(1))
    hessian = x.T @ x  # rank 8 of 40: tiny damping is not enough for float32 Cholesky
    hessian.diagonal().add_(-hessian.diagonal().mean() * 0.5)  # indefinite: the first attempts fail
    before = hessian.clone()
    try:
        expected = out_of_place_factor(before, 1e-6)
    except AssertionError:
        with pytest.raises(QuantizationError):
            inverse_hessian_factor(hessian, 1e-6, "layer")
        return
    assert torch.equal(inverse_hessian_factor(hessian, 1e-6, "layer"), expected)
    assert "10x damping" in caplog.text
    assert torch.equal(hessian, before)


def test_permutations_in_place_equal_the_gathers():
    matrix = torch.randn(300, 300)
    order = torch.randperm(300, generator=torch.Generator().manual_seed(2))
    expected = matrix[order][:, order]
    permute_columns_(matrix, order)
    permute_rows_(matrix, order)
    assert torch.equal(matrix, expected)
    wide = torch.randn(5, 300)
    expected = wide[:, order]
    permute_columns_(wide, order)
    assert torch.equal(wide, expected)


@pytest.mark.parametrize("act_order", [True, False])
def test_gptq_working_in_place_gives_the_same_codes(act_order):
    weight = torch.randn(48, 256, generator=torch.Generator().manual_seed(3))
    hessian = gram_hessian(256, 300)
    copied = gptq_quantize(weight, hessian, 4, True, 32, act_order=act_order)
    taken = gptq_quantize(weight.clone(), hessian.clone(), 4, True, 32, act_order=act_order, overwrite_weight=True,
                          overwrite_hessian=True)
    assert torch.equal(copied.codes, taken.codes) and torch.equal(copied.scale, taken.scale)


def test_take_hessian_hands_over_the_running_sum_when_it_is_the_last_reader():
    cache = GramCache()
    q, k, down = (HessianAccumulator(64, torch.device("cpu"), cache) for _ in range(3))
    x = torch.randn(2, 10, 64)
    q.update(x, key=x)
    k.update(x, key=x)
    y = torch.randn(2, 10, 64)
    down.update(y, key=y)
    expected_qk, expected_down = q.hessian(), down.hessian()
    total = down.sum
    taken = down.take_hessian()
    assert taken.data_ptr() == total.data_ptr() and torch.equal(taken, expected_down)  # scaled in place, no copy
    shared = q.take_hessian()  # k still reads the stream: a copy
    assert torch.equal(shared, expected_qk) and torch.equal(k.hessian(), expected_qk)
    assert torch.equal(k.take_hessian(), expected_qk)


def test_factorisation_needs_one_extra_hessian_of_memory():
    width = 3072  # 36 MiB in float32
    hessian = gram_hessian(width, 64) + torch.eye(width)
    if not reset_peak_rss():  # Linux only (/proc/self/clear_refs); elsewhere a whole-process peak says nothing here
        pytest.skip("measuring one call's peak needs Linux's /proc/self/clear_refs to reset the peak RSS counter")
    held = rss_bytes()
    upper = inverse_hessian_factor(hessian, 0.01, "layer")
    extra = (peak_since_reset() - held) / hessian.nbytes
    del upper
    assert extra < 1.5, f"the factorisation held {extra:.2f} Hessians of extra memory"


def test_dequantize_in_place_equals_the_formula_and_keeps_the_codes():
    from modelslim_core.quant.int_affine import dequantize_grouped

    codes = torch.randint(-8, 8, (6, 64), dtype=torch.int8)
    scale, offset = torch.rand(6, 4) + 0.01, torch.randn(6, 4).round()
    kept = codes.clone()
    expected = ((codes.float().reshape(6, 4, 16) - offset[..., None]) * scale[..., None]).reshape(6, 64)
    assert torch.equal(dequantize_grouped(codes, scale, offset), expected)
    float_codes = codes.float()  # a float container must not be rewritten by its own dequantization
    dequantize_grouped(float_codes, scale, offset)
    assert torch.equal(codes, kept) and torch.equal(float_codes, kept.float())
