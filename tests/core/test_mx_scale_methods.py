"""MX weight scale methods against a direct search on small tensors: every block's exponent (or c, or
outer scale) is found by looping over the candidates in plain Python and computing each error; the
vectorised methods must pick exactly the same grid."""

from __future__ import annotations

import math

import pytest
import torch

from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.mx import MXFP4, MXFP8, mx_dequantize, round_elements
from modelslim_core.quant.mx_scales import (
    ceil_x_candidates,
    ceil_x_quantize,
    dual_scale_dequantize,
    dual_scale_quantize,
    fouroversix_quantize,
    mse_round_quantize,
)


def weight(rows: int = 6, cols: int = 96, seed: int = 0) -> torch.Tensor:
    torch.manual_seed(seed)
    w = torch.randn(rows, cols) * torch.logspace(-3, 1, rows)[:, None]
    w[0, 5] = 40.0  # an outlier block
    w[1, 32:64] = 0.0  # an all-zero block
    return w


def block_grid(block: torch.Tensor, exponent: int, fmt) -> torch.Tensor:
    """One block quantized with exponent E: round(x / 2^E) to the element format, times 2^E."""
    return round_elements(block / 2.0**exponent, fmt) * 2.0**exponent


def block_error(block: torch.Tensor, exponent: int, fmt) -> float:
    return float(((block_grid(block, exponent, fmt) - block).double() ** 2).sum())


def blocks(w: torch.Tensor):
    for r in range(w.shape[0]):
        for b in range(w.shape[1] // 32):
            yield r, b, w[r, 32 * b: 32 * b + 32]


def test_mse_round_picks_the_better_of_floor_and_ceil():
    w = weight()
    elements, biased = mse_round_quantize(w, MXFP8)
    got = mx_dequantize(elements, biased)
    for r, b, block in blocks(w):
        amax = float(block.abs().max())
        if amax == 0:
            assert torch.all(got[r, 32 * b: 32 * b + 32] == 0)
            continue
        floor, ceil = math.floor(math.log2(amax)) - 8, math.ceil(math.log2(amax)) - 8
        best = ceil if block_error(block, ceil, MXFP8) < block_error(block, floor, MXFP8) else floor
        assert int(biased[r, b]) - 127 == best
        assert torch.equal(got[r, 32 * b: 32 * b + 32], block_grid(block, best, MXFP8))


@pytest.mark.parametrize("c", [6.0, 7.25, 12.0])
def test_ceil_x_is_the_smallest_exponent_keeping_the_block_max_under_c(c):
    w = weight(seed=1)
    _, biased, chosen = ceil_x_quantize(w, c)
    assert chosen == c
    for r, b, block in blocks(w):
        amax = float(block.abs().max())
        if amax == 0:
            continue
        exponent = int(biased[r, b]) - 127
        search = [e for e in range(-140, 140) if amax / 2.0**e <= c]  # every exponent that keeps amax <= c
        assert exponent == min(search)


def test_ceil_x_search_keeps_the_first_c_with_the_lowest_tensor_error():
    w = weight(seed=2)
    candidates = ceil_x_candidates(6.0, 12.0, 0.25)
    assert candidates[0] == 6.0 and candidates[-1] == 12.0 and len(candidates) == 25
    errors = []
    for c in candidates:
        elements, biased, _ = ceil_x_quantize(w, c)
        errors.append(float(((mx_dequantize(elements, biased) - w).double() ** 2).sum()))
    _, _, chosen = ceil_x_quantize(w, search=candidates)
    assert chosen == candidates[errors.index(min(errors))]


def test_fouroversix_keeps_the_better_of_amax_over_6_and_4():
    w = weight(seed=3, cols=64)
    elements, biased, share = fouroversix_quantize(w)
    got = mx_dequantize(elements, biased)
    fours = 0
    for r, b, block in blocks(w):
        amax = float(block.abs().max())
        candidates = []
        for divisor in (6, 4):
            s = amax / divisor
            log = math.log2(s) if s > 0 else 0.0
            frac = log - math.floor(log)
            if abs(frac - 0.5) <= 1e-6:
                e = math.floor(log) + 1 if math.floor(log) % 2 == 0 else math.floor(log)
            else:
                e = round(log)
            candidates.append(e)
        six, four = candidates
        use_four = block_error(block, four, MXFP4) < block_error(block, six, MXFP4)
        fours += use_four
        assert int(biased[r, b]) - 127 == (four if use_four else six)
        assert torch.equal(got[r, 32 * b: 32 * b + 32], block_grid(block, four if use_four else six, MXFP4))
    assert share == pytest.approx(fours / (w.shape[0] * 2))


def test_dualscale_outer_scale_then_mxfp4_minmax_inside():
    w = weight(seed=4, cols=128)
    elements, biased, scale = dual_scale_quantize(w, 64)
    assert scale.shape == (6, 2) and scale.dtype == torch.float32
    got = dual_scale_dequantize(elements, biased, scale)
    for r in range(w.shape[0]):
        for d in range(2):
            part = w[r, 64 * d: 64 * d + 64]
            s = float(part.abs().max()) / 6 or 1.0  # a zero block keeps S = 1 (no division by zero)
            assert float(scale[r, d]) == pytest.approx(s)
            inner = part / s
            for b in range(2):
                block = inner[32 * b: 32 * b + 32]
                amax = float(block.abs().max()) * 8 / 7
                e = max(math.floor(math.log2(amax)) - 2, -127) if amax > 0 else -127
                expected = block_grid(block, e, MXFP4) * s
                assert torch.allclose(got[r, 64 * d + 32 * b: 64 * d + 32 * b + 32], expected, rtol=1e-6, atol=0)
    assert ((got - w).norm() / w.norm()) < 0.2


@pytest.mark.parametrize("weight_cfg, problem", [
    ({"dtype": "mxfp4", "scope": "per_block", "method": "ceil_x", "ext": {"ceil_x_value": 13}}, "ceil_x_value"),
    ({"dtype": "mxfp4", "scope": "per_block", "method": "ceil_x",
      "ext": {"enable_search": True, "search_min": 8, "search_max": 7}}, "search_max must be greater"),
    ({"dtype": "mxfp8", "scope": "per_block", "method": "ceil_x"}, "not available"),
    ({"dtype": "mxfp4", "scope": "dual_scale", "method": "dualscale"}, "dual_block_size"),
])
def test_bad_method_settings_are_refused_at_load(weight_cfg, problem):
    act = {"dtype": weight_cfg["dtype"], "scope": weight_cfg["scope"], "symmetric": True,
           "method": "dualscale" if weight_cfg["scope"] == "dual_scale" else "minmax"}
    with pytest.raises(ValueError, match=problem):
        LinearQConfig(act=act, weight={**weight_cfg, "symmetric": True})
