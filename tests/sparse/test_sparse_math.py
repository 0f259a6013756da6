"""The sparsity math against hand-computed cases: FP16 mantissa rounding, the 2% full-precision exceptions,
the pruning ratio, and ADMM beating magnitude pruning on a layer whose inputs are correlated."""

from __future__ import annotations

import pytest
import torch

from modelslim_core.sparsity.admm import admm_prune, keep_mask, magnitude_prune, output_error, prune_count
from modelslim_core.sparsity.fp16_compression import compress_fp16, round_mantissa, to_fp16

# value -> rounded value (2 mantissa fraction bits; ties to even; FP16 subnormals flushed; exponents -14..-9 keep
# only their power of two: m <= 1.5 -> 1, m > 1.5 -> 2)
HAND_CASES = [
    (1.1, 1.0),            # fp16 1.0996: 4.398 quarter-steps -> 4
    (1.2, 1.25),           # 4.8 -> 5
    (1.125, 1.0),          # 4.5 -> 4 (tie to even)
    (1.375, 1.5),          # 5.5 -> 6 (tie to even)
    (1.875, 2.0),          # 7.5 -> 8: the mantissa carries into the exponent
    (-3.3, -3.5),          # -1.65 * 2: 6.6 -> 7 -> -1.75 * 2
    (0.3, 0.3125),         # 1.2 * 2^-2 -> 1.25 * 2^-2
    (1.3 * 2**-8, 1.25 * 2**-8),   # exponent -8: normal rounding
    (1.3 * 2**-9, 2**-9),  # exponent -9: power of two only
    (1.6 * 2**-10, 2**-9),  # m > 1.5 rounds up to the next power
    (1.5 * 2**-12, 2**-12),  # m = 1.5 stays
    (-1.7 * 2**-14, -(2**-13)),  # smallest normal exponent
    (2**-15, 0.0),         # FP16 subnormal -> 0
    (0.0, 0.0),
    (70000.0, 57344.0),    # beyond FP16: the largest 2-bit value, 1.75 * 2^15
]


@pytest.mark.parametrize("value,expected", HAND_CASES)
def test_mantissa_rounding_hand_cases(value, expected):
    assert round_mantissa(torch.tensor([value])).item() == expected


def test_rounded_values_are_fp16_with_at_most_two_fraction_bits():
    w = torch.randn(64, 64) * 0.05
    rounded = round_mantissa(w)
    assert torch.equal(rounded, rounded.half().float())
    nonzero = rounded[rounded != 0].abs()
    fraction, _ = torch.frexp(nonzero)
    assert torch.equal(fraction * 8, torch.round(fraction * 8))  # m = 2·fraction has 2 fraction bits


def test_the_most_harmful_two_percent_keep_full_precision():
    torch.manual_seed(0)
    w = torch.rand(10, 10) + 1.0          # all in [1, 2): every rounding error is visible, none are small weights
    rms = torch.ones(10)
    rms[3] = 100.0                        # input channel 3 dominates the output
    result = compress_fp16(w, rms)
    full, rounded = to_fp16(w), round_mantissa(w)
    kept = result != rounded
    assert int(kept.sum()) <= 2           # int(100 * 0.02)
    harm = (full - rounded).abs() * rms
    top2 = torch.topk(harm.flatten(), 2).indices
    assert torch.equal(result.flatten()[top2], full.flatten()[top2])
    assert torch.equal(result.flatten()[top2], result.flatten()[top2].half().float())
    assert set(kept.nonzero()[:, 1].tolist()) <= {3}


def test_small_weights_are_rounded_even_when_their_harm_is_largest():
    w = torch.full((1, 100), 1.0)
    w[0, 0] = 1.3 * 2**-10                 # would be the most harmful with a huge rms, but it is a small weight
    rms = torch.ones(100)
    rms[0] = 1e9
    result = compress_fp16(w, rms)
    assert result[0, 0].item() == 2**-10


@pytest.mark.parametrize("ratio", [0.0, 0.3, 0.5, 0.75, 1.0])
def test_keep_mask_prunes_exactly_the_ratio_of_smallest(ratio):
    values = torch.randn(37, 23)
    mask = keep_mask(values, ratio)
    count = prune_count(values.numel(), ratio)
    assert int((~mask).sum()) == count
    if 0 < count < values.numel():
        assert values.abs()[~mask].max() <= values.abs()[mask].min()


def correlated_layer(seed: int = 0, inputs: int = 48, outputs: int = 32, tokens: int = 512):
    """A weight and the Gram matrix of inputs with strongly correlated, unevenly scaled channels."""
    generator = torch.Generator().manual_seed(seed)
    latent = torch.randn(tokens, 8, generator=generator)
    mixing = torch.randn(8, inputs, generator=generator)
    x = latent @ mixing + 0.1 * torch.randn(tokens, inputs, generator=generator)
    x[:, :4] *= 10.0
    weight = torch.randn(outputs, inputs, generator=generator)
    return weight, x.T @ x


@pytest.mark.parametrize("ratio", [0.3, 0.5])
def test_admm_honours_the_ratio_and_beats_magnitude_pruning(ratio):
    weight, gram = correlated_layer()
    pruned = admm_prune(weight, gram, ratio)
    assert int((pruned == 0).sum()) == prune_count(weight.numel(), ratio)
    admm_error = output_error(pruned, weight, gram)
    magnitude_error = output_error(magnitude_prune(weight, ratio), weight, gram)
    assert admm_error < 0.5 * magnitude_error, (admm_error, magnitude_error)


def test_admm_with_ratio_zero_is_the_identity_and_ratio_one_prunes_everything():
    weight, gram = correlated_layer(1)
    assert torch.equal(admm_prune(weight, gram, 0.0), weight)
    assert torch.count_nonzero(admm_prune(weight, gram, 1.0)) == 0


def test_dead_input_channels_are_pruned_first():
    weight, gram = correlated_layer(2)
    gram[:, 5] = 0
    gram[5, :] = 0                          # channel 5 never carries signal
    pruned = admm_prune(weight, gram, 0.1)
    assert torch.count_nonzero(pruned[:, 5]) == 0
