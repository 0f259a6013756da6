"""Clipping search for GPTQ's grids: hand-made rows where the best range is known."""

from __future__ import annotations

import torch

from modelslim_core.quant.clip_search import CLIP_RATIOS, clip_search_qparams
from modelslim_core.quant.gptq import gptq_quantize
from modelslim_core.quant.int_affine import compute_qparams, fake_quantize


def weighted_error(row: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int,
                   importance: torch.Tensor) -> float:
    return float(((fake_quantize(row, scale[:, None], offset[:, None], bits) - row) ** 2 @ importance).sum())


def test_one_large_weight_is_clipped_when_the_others_gain_more_than_it_loses():
    # 4-bit symmetric: minmax's step is 1.0/7; the 0.3-ish weights sit between grid points
    row = torch.tensor([[1.0] + [0.3, -0.3, 0.21, -0.22, 0.37, -0.36, 0.29] * 9])
    ones = torch.ones(row.shape[1])
    scale, offset = clip_search_qparams(row, 4, True, ones)
    minmax_scale, minmax_offset = compute_qparams(row.amin(1), row.amax(1), 4, True)
    assert scale.item() < minmax_scale.item() and offset.item() == 0
    assert weighted_error(row, scale, offset, 4, ones) < weighted_error(row, minmax_scale, minmax_offset, 4, ones)


def test_an_important_column_keeps_its_range():
    row = torch.tensor([[1.0] + [0.3, -0.3, 0.21, -0.22, 0.37, -0.36, 0.29] * 9])
    importance = torch.ones(row.shape[1])
    importance[0] = 1e4  # the large weight meets large inputs: clipping it costs more than it saves
    scale, _ = clip_search_qparams(row, 4, True, importance)
    assert torch.allclose(scale, compute_qparams(row.amin(1), row.amax(1), 4, True)[0])


def test_search_never_loses_to_minmax_and_handles_asymmetric_and_zero_rows():
    generator = torch.Generator().manual_seed(0)
    rows = torch.randn(32, 64, generator=generator) ** 3
    rows[3] = 0.0
    importance = torch.rand(64, generator=generator)
    for symmetric in (True, False):
        scale, offset = clip_search_qparams(rows, 4, symmetric, importance)
        base_scale, base_offset = compute_qparams(rows.amin(1), rows.amax(1), 4, symmetric)
        searched = (fake_quantize(rows, scale[:, None], offset[:, None], 4) - rows) ** 2 @ importance
        plain = (fake_quantize(rows, base_scale[:, None], base_offset[:, None], 4) - rows) ** 2 @ importance
        assert (searched <= plain + 1e-7).all() and (searched < plain).any()
        assert torch.isfinite(scale).all() and fake_quantize(rows[3:4], scale[3:4, None], offset[3:4, None], 4).eq(0).all()
    assert CLIP_RATIOS[0] == 1.0 and min(CLIP_RATIOS) >= 0.8


def test_gptq_with_clip_search_lowers_the_output_error_of_heavy_tailed_weights():
    generator = torch.Generator().manual_seed(2)
    x = torch.randn(2048, 64, generator=generator)
    weight = torch.randn(32, 64, generator=generator) ** 3  # heavy tails: one weight stretches each group's range
    hessian = x.T @ x * (2 / x.shape[0])
    reference = x @ weight.T

    def error(quantized) -> float:
        return float((x @ quantized.dequantize().T - reference).norm() / reference.norm())

    for act_order in (False, True):
        searched = gptq_quantize(weight, hessian, 4, True, 32, act_order=act_order, clip_search=True)
        plain = gptq_quantize(weight, hessian, 4, True, 32, act_order=act_order, clip_search=False)
        assert error(searched) < error(plain)


def test_int4_gptq_searches_the_clip_by_default_hand_computed():
    """Row [1.0, 0.84], the first input almost silent (H = diag(1e-8, 1)): no error to spread, so GPTQ rounds to
    the nearest grid point. The plain full range has step 1.0/7.5: 0.84 -> code 6 (0.8, error 0.04). Clipping the
    range to 0.9 gives step 0.12: 0.84 = 7 steps exactly, and the silent 1.0 clips to 0.84 at weight 1e-8.
    The int4 default picks that clip; int8 keeps the plain range (clip_search off there)."""
    weight = torch.tensor([[1.0, 0.84]])
    hessian = torch.diag(torch.tensor([1e-8, 1.0]))
    searched = gptq_quantize(weight, hessian, 4, True, 0)
    assert torch.allclose(searched.scale, torch.tensor([[0.12]])) and searched.codes.tolist() == [[7, 7]]
    plain = gptq_quantize(weight, hessian, 4, True, 0, clip_search=False)
    assert torch.allclose(plain.scale, torch.tensor([[1.0 / 7.5]])) and plain.codes.tolist() == [[7, 6]]
    int8 = gptq_quantize(weight, hessian, 8, True, 0)
    assert torch.allclose(int8.scale, torch.tensor([[1.0 / 127]]))


def test_grouped_search_of_every_group_at_once_equals_one_group_at_a_time():
    generator = torch.Generator().manual_seed(3)
    weight = torch.randn(8, 4, 16, generator=generator) ** 3  # [out, groups, group_size]
    importance = torch.rand(4, 16, generator=generator)
    scale, offset = clip_search_qparams(weight, 4, False, importance, full_range=False)
    for group in range(4):
        alone = clip_search_qparams(weight[:, group], 4, False, importance[group])
        assert torch.equal(scale[:, group], alone[0]) and torch.equal(offset[:, group], alone[1])
