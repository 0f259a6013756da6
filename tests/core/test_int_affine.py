"""Hand-computed cases for the integer affine core (docs/algorithms.md, "Integer affine core") and minmax ("MinMax")."""

import pytest
import torch

from modelslim_core.quant.int_affine import SCALE_EPS, compute_qparams, dequantize, fake_quantize, quantize
from modelslim_core.quant.minmax import MinMaxObserver, minmax_weight_qparams


def t(*values):
    return torch.tensor(values, dtype=torch.float32)


def test_symmetric_int8_scale_is_absmax_over_127():
    scale, offset = compute_qparams(t(-1.0), t(2.54), bits=8, symmetric=True)
    assert scale.item() == pytest.approx(0.02)
    assert offset.item() == 0
    codes = quantize(t(-1.0, 0.5, 2.54), scale, offset, 8)
    assert codes.tolist() == [-50, 25, 127]
    assert codes.dtype == torch.int8


def test_asymmetric_int8_offset_is_signed():
    scale, offset = compute_qparams(t(-1.0), t(2.0), bits=8, symmetric=False)
    assert scale.item() == pytest.approx(3.0 / 255)
    assert offset.item() == round(1.0 / (3.0 / 255)) - 128 == -43
    assert quantize(t(-1.0, 2.0), scale, offset, 8).tolist() == [-128, 127]


def test_range_is_widened_to_contain_zero():
    scale, offset = compute_qparams(t(1.0), t(2.0), bits=8, symmetric=False)
    assert scale.item() == pytest.approx(2.0 / 255)  # min 1.0 became 0.0
    assert offset.item() == -128  # all-positive tensors sit at the bottom of the signed range


def test_round_half_to_even():
    scale, offset = t(1.0), t(0.0)
    assert quantize(t(2.5, 3.5, -2.5, 0.5, -0.5), scale, offset, 8).tolist() == [2, 4, -2, 0, 0]
    # with an offset: 0.25 / 0.5 - 3 = -2.5 -> -2 (half-away-from-zero would give -3)
    assert quantize(t(0.25, 0.75), t(0.5), t(-3.0), 8).tolist() == [-2, -2]


def test_symmetric_clamp_uses_full_signed_range():
    scale, offset = compute_qparams(t(-1.0), t(1.0), bits=8, symmetric=True)
    assert quantize(t(-1.01, -5.0, 5.0), scale, offset, 8).tolist() == [-128, -128, 127]
    scale4, offset4 = compute_qparams(t(-7.0), t(7.0), bits=4, symmetric=True)
    assert scale4.item() == 1.0
    assert quantize(t(-9.0, 9.0, 3.4), scale4, offset4, 4).tolist() == [-8, 7, 3]


def test_full_range_symmetric_int4_scale_is_absmax_over_7_5_and_uses_code_minus_8():
    scale, offset = compute_qparams(t(-1.5), t(3.0), bits=4, symmetric=True, full_range=True)
    assert scale.item() == pytest.approx(0.4) and offset.item() == 0
    # 3.0 / 0.4 = 7.5 -> 8 (half to even) -> clamped to 7; -1.5 / 0.4 = -3.75 -> -4; 0.75 / 0.4 = 1.875 -> 2
    assert quantize(t(-1.5, 0.75, 3.0), scale, offset, 4).tolist() == [-4, 2, 7]
    scale, offset = compute_qparams(t(-3.0), t(1.0), bits=4, symmetric=True, full_range=True)
    assert quantize(t(-3.0, 1.0), scale, offset, 4).tolist() == [-8, 2]  # -7.5 -> -8: the negative end is on the grid
    assert compute_qparams(t(-1.0), t(2.55), bits=8, symmetric=True, full_range=True)[0].item() == pytest.approx(0.02)
    # asymmetric grids already span every code: full_range changes nothing there
    assert torch.equal(torch.stack(compute_qparams(t(-1.0), t(2.0), 4, False, full_range=True)),
                       torch.stack(compute_qparams(t(-1.0), t(2.0), 4, False)))


def test_zero_range_channel_gets_eps_scale_and_zero_codes():
    scale, offset = compute_qparams(t(0.0), t(0.0), bits=8, symmetric=True)
    assert scale.item() == pytest.approx(SCALE_EPS)
    assert quantize(t(0.0, 0.0), scale, offset, 8).tolist() == [0, 0]
    scale, offset = compute_qparams(t(0.0), t(0.0), bits=8, symmetric=False)
    assert scale.item() == pytest.approx(SCALE_EPS)
    assert offset.item() == -128
    assert dequantize(quantize(t(0.0), scale, offset, 8), scale, offset).item() == 0.0


def test_dequantize_and_fake_quantize_agree():
    x = torch.linspace(-3, 5, 101)
    scale, offset = compute_qparams(x.min(), x.max(), 8, symmetric=False)
    codes = quantize(x, scale, offset, 8)
    assert torch.equal(dequantize(codes, scale, offset), fake_quantize(x, scale, offset, 8))
    assert (dequantize(codes, scale, offset) - x).abs().max() <= scale / 2 + 1e-6


def test_weight_qparams_are_per_output_channel():
    weight = torch.tensor([[1.0, -2.0], [0.0, 0.0], [0.5, 0.25]])
    scale, offset = minmax_weight_qparams(weight, 8, symmetric=True)
    assert scale.tolist() == pytest.approx([2.0 / 127, SCALE_EPS, 0.5 / 127])
    assert offset.tolist() == [0, 0, 0]
    scale, offset = minmax_weight_qparams(weight, 8, symmetric=False)
    assert scale[0].item() == pytest.approx(3.0 / 255)
    assert offset[2].item() == -128  # row 2 is all positive


def test_observer_keeps_global_range_across_batches():
    observer = MinMaxObserver("max")
    observer.update(t(-1.0, 0.5))
    observer.update(t(0.0, 3.0))
    lo, hi = observer.range()
    assert (lo.item(), hi.item()) == (-1.0, 3.0)


def test_observer_mean_aggregation_averages_batch_extremes():
    observer = MinMaxObserver("mean")
    observer.update(t(-1.0, 1.0))
    observer.update(t(-3.0, 5.0))
    lo, hi = observer.range()
    assert (lo.item(), hi.item()) == (-2.0, 3.0)


def test_observer_without_data_refuses():
    with pytest.raises(RuntimeError):
        MinMaxObserver().range()


@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16])
@pytest.mark.parametrize("bits", [8, 4])
def test_per_token_fake_quant_is_bit_identical_to_the_plain_formula_and_leaves_its_input(dtype, bits):
    from modelslim_core.quant.int_affine import SCALE_EPS, fake_quantize_per_token_sym

    torch.manual_seed(0)
    x = (torch.randn(2, 37, 64) * 3).to(dtype)
    x[0, 3, 5], x[1, 0] = 90.0, 0.0  # an outlier and an all-zero token (scale clamped to eps)
    kept = x.clone()
    hi = 2 ** (bits - 1) - 1
    scale = torch.clamp(x.float().abs().amax(dim=-1, keepdim=True) / hi, min=SCALE_EPS)
    expected32 = torch.clamp(torch.round(x.float() / scale), -hi - 1, hi) * scale
    assert torch.equal(fake_quantize_per_token_sym(x, bits), expected32.to(dtype))
    assert torch.equal(x, kept)
    leaf = x.float().requires_grad_()  # the autograd path computes the same values
    assert torch.equal(fake_quantize_per_token_sym(leaf, bits).detach(), expected32)
