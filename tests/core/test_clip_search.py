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
