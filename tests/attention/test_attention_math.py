"""Hand-computed cases for the attention statistics and quantizers (KV-cache C8, FA3) and the quant_type string."""

from __future__ import annotations

import pytest
import torch

from modelslim_core.attention.fa_quant_type import format_quant_type, parse_quant_type
from modelslim_core.attention.qkv_quant import channel_params, fake_quantize_states, head_params
from modelslim_core.attention.stats import ChannelRange, HeadRecallWindow, recall_window
from modelslim_core.errors import CheckpointError
from modelslim_core.quant.int_affine import SCALE_EPS


def states(per_head_dim: list[list[list[float]]]) -> torch.Tensor:
    """`[H][D][S]` nested lists -> `[1, H, S, D]` states."""
    return torch.tensor(per_head_dim).permute(0, 2, 1).unsqueeze(0)


def test_kv_channel_range_runs_over_calls_in_head_major_channel_order():
    stat = ChannelRange()
    # head 0: d0 = [1, -2, 0.5], d1 = [0.5, 1.0, 0.25]; head 1: d0 = zeros, d1 = [-4, 2, 1]
    stat.update(states([[[1, -2, 0.5], [0.5, 1.0, 0.25]], [[0, 0, 0], [-4, 2, 1]]]))
    stat.update(states([[[3], [0]], [[0], [0]]]))  # a second call with one token
    lo, hi = stat.range()
    assert lo.tolist() == [-2, 0, 0, -4]
    assert hi.tolist() == [3, 1, 0, 2]
    assert stat.abs_max().tolist() == [3, 1, 0, 4]


def test_kv_channel_params_by_hand():
    lo, hi = torch.tensor([-2.0, 0.5, 0.0, -4.0]), torch.tensor([3.0, 1.0, 0.0, -1.0])
    sym = channel_params(lo, hi, symmetric=True)
    assert torch.allclose(sym.scale, torch.tensor([3 / 127, 1 / 127, SCALE_EPS, 4 / 127]))
    assert sym.offset.tolist() == [0, 0, 0, 0]
    asym = channel_params(lo, hi, symmetric=False)
    # ranges widened to include 0: [-2,3], [0,1], [0,0], [-4,0]
    assert torch.allclose(asym.scale, torch.tensor([5 / 255, 1 / 255, SCALE_EPS, 4 / 255]))
    # offset = round(-min/scale) - 128: round(102) - 128, 0 - 128, 0 - 128, round(255) - 128
    assert asym.offset.tolist() == [-26, -128, -128, 127]


def test_fake_quantized_kv_states_use_the_channel_of_their_head():
    params = channel_params(torch.tensor([-2.0, 0.0, -1.0, -4.0]), torch.tensor([3.0, 1.0, 1.0, 2.0]), symmetric=False)
    x = torch.tensor([[[[0.3, 1.7]], [[-0.9, 1.5]]]])  # [1, 2 heads, 1 token, D=2]
    expected = torch.empty_like(x)
    for h in range(2):
        for d in range(2):
            s, z = params.scale[2 * h + d], params.offset[2 * h + d]
            q = torch.clamp(torch.round(x[0, h, 0, d] / s + z), -128, 127)
            expected[0, h, 0, d] = (q - z) * s
    assert torch.equal(fake_quantize_states(x, params), expected)
    assert fake_quantize_states(x, params)[0, 0, 0, 1] == pytest.approx(1.0, abs=1e-6)  # clipped at the range's max


def test_recall_window_drops_the_outlier_and_keeps_the_densest_share():
    rows = torch.tensor([[0.0, 1.0, 2.0, 3.0, 100.0], [-50.0, -1.0, 0.0, 1.0, 2.0]])
    lo, hi = recall_window(rows, 0.8)  # keep 4 of 5
    assert lo.tolist() == [0.0, -1.0] and hi.tolist() == [3.0, 2.0]
    lo, hi = recall_window(rows, 1.0)
    assert lo.tolist() == [0.0, -50.0] and hi.tolist() == [100.0, 2.0]


def test_head_window_keeps_heads_apart_for_batches_larger_than_one():
    x = torch.zeros(2, 3, 4, 5)  # B=2, H=3
    for h in range(3):
        x[:, h] = torch.linspace(-1, 1, 20).reshape(4, 5) * (h + 1)
    x[1, 2] *= 2  # head 2 of the second sample is wider
    window = HeadRecallWindow(1.0)
    window.update(x)
    lo, hi = window.range()
    assert lo.tolist() == [-1.0, -2.0, -6.0] and hi.tolist() == [1.0, 2.0, 6.0]


def test_fa3_head_params_by_hand():
    int8 = head_params(torch.tensor([-2.54, 0.0]), torch.tensor([1.0, 0.0]), "int8")
    assert int8.scale.shape == (2, 1) and torch.allclose(int8.scale[:, 0], torch.tensor([2.54 / 127, SCALE_EPS]))
    fp8 = head_params(torch.tensor([-1.0]), torch.tensor([4.48]), "fp8_e4m3")
    assert fp8.scale.item() == pytest.approx(4.48 / 448)
    x = torch.tensor([-2.54, 1.27, 0.013]).reshape(1, 1, 3, 1).expand(1, 2, 3, 1)
    # scale 0.02: -2.54 -> -127; 1.27 -> 63.5 rounds half to even -> 64 -> 1.28; 0.013 -> 0.65 -> 1 -> 0.02
    assert torch.allclose(fake_quantize_states(x, int8)[0, 0, :, 0], torch.tensor([-2.54, 1.28, 0.02]))


@pytest.mark.parametrize(
    "settings, text",
    [
        ({"Q": ("int8", False), "K": ("int8", False), "V": ("int8", False)}, "INT8"),
        ({"Q": ("fp8_e4m3", True), "K": ("int8", False), "V": ("int8", False)}, "Q_FP8_DYNAMIC_KV_INT8"),
        ({"Q": ("fp8_e4m3", True), "K": ("fp8_e4m3", True), "V": ("fp8_e4m3", True)}, "FP8_DYNAMIC"),
        ({"Q": ("int8", False), "K": ("fp8_e4m3", False), "V": ("int8", False)}, "QV_INT8_K_FP8"),
    ],
)
def test_fa_quant_type_string_round_trips(settings, text):
    assert format_quant_type(settings) == text
    assert parse_quant_type(text, "x.quant_type") == settings


def test_a_bad_fa_quant_type_string_is_named():
    with pytest.raises(CheckpointError, match="layer.quant_type is 'QK'"):
        parse_quant_type("QK", "layer.quant_type")
