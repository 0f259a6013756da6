"""Hand-computed bit layouts and number formats: int4 nibbles, FP4 E2M1 codes, E8M0 exponents, MX rounding,
FP8 scales, scale_bias (docs/formats.md; docs/algorithms.md, "Integer affine core")."""

from __future__ import annotations

import pytest
import torch

from modelslim_core.quant.fp8 import fp8_channel_quantize
from modelslim_core.quant.mx import MXFP4, MXFP8, mx_dequantize, mx_quantize
from modelslim_core.quant.packing import (
    fp4_codes,
    fp4_values,
    layout_problems,
    pack_fp4,
    pack_int4_rows,
    unpack_fp4,
    unpack_int4_rows,
)
from modelslim_core.quant.scale_bias import scale_bias, scale_bias_chunks


def i8(*rows):
    return torch.tensor(rows, dtype=torch.int8)


def test_int4_rows_pack_low_nibble_first_along_the_output_dim():
    codes = i8([1, -8, 0], [-2, 7, -1])  # rows 0 and 1 share one byte per column
    packed = pack_int4_rows(codes)
    assert packed.dtype == torch.int8 and packed.shape == (1, 3)
    # 0x1 | 0xE << 4 = 0xE1; 0x8 | 0x7 << 4 = 0x78; 0x0 | 0xF << 4 = 0xF0
    assert packed.view(torch.uint8).tolist() == [[0xE1, 0x78, 0xF0]]
    assert torch.equal(unpack_int4_rows(packed), codes)


def test_int4_round_trip_covers_every_pair_and_expert_stacks():
    values = torch.arange(-8, 8, dtype=torch.int8)
    codes = torch.stack(torch.meshgrid(values, values, indexing="ij")).reshape(2, -1)  # all 256 (even, odd) pairs
    assert torch.equal(unpack_int4_rows(pack_int4_rows(codes)), codes)
    experts = torch.randint(-8, 8, (3, 4, 5), dtype=torch.int8, generator=torch.Generator().manual_seed(0))
    assert pack_int4_rows(experts).shape == (3, 2, 5)
    assert torch.equal(unpack_int4_rows(pack_int4_rows(experts)), experts)


def test_int4_packing_refuses_odd_rows_and_out_of_range_codes():
    with pytest.raises(ValueError, match="output dimension must be even"):
        pack_int4_rows(i8([1, 2]))
    with pytest.raises(ValueError, match="-8..7"):
        pack_int4_rows(i8([8], [0]))


def test_fp4_codes_including_negative_zero():
    values = torch.tensor([0.0, 0.5, 1.0, 1.5, 2.0, 3.0, 4.0, 6.0, -0.0, -0.5, -3.0, -6.0])
    codes = fp4_codes(values)
    assert codes.dtype == torch.uint8
    assert codes.tolist() == [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 15]
    decoded = fp4_values(codes)
    assert torch.equal(decoded, values) and torch.signbit(decoded[8])  # −0 survives the round trip


def test_fp4_packs_along_the_input_dim_low_nibble_first():
    codes = torch.tensor([[1, 15, 8, 0], [7, 2, 0, 9]], dtype=torch.uint8)
    packed = pack_fp4(codes)
    assert packed.dtype == torch.uint8 and packed.shape == (2, 2)
    assert packed.tolist() == [[0xF1, 0x08], [0x27, 0x90]]
    assert torch.equal(unpack_fp4(packed), codes)


def test_fp4_refuses_values_off_the_grid():
    with pytest.raises(ValueError, match="not exactly representable"):
        fp4_codes(torch.tensor([2.5]))
    with pytest.raises(ValueError, match="input dimension must be even"):
        pack_fp4(torch.zeros(2, 3, dtype=torch.uint8))


def test_mxfp4_block_exponent_rounding_and_saturation():
    # amax 6 · 8/7 = 6.86 -> floor(log2) = 2 -> E = 2 − emax(2) = 0 -> stored 127; elements are the values themselves
    block = torch.tensor([[6.0, 2.5, -2.5, 0.25, -0.25, -0.0, 0.75, 5.0] + [0.0] * 24])
    elements, exponents = mx_quantize(block, MXFP4)
    assert exponents.dtype == torch.uint8 and exponents.tolist() == [[127]]
    # half away from zero: 2.5 -> 3, 0.25 -> 0.5 (subnormal step 0.5), 0.75 -> 1, 5 -> 6; −0 keeps its sign
    assert elements[0, :8].tolist() == [6.0, 3.0, -3.0, 0.5, -0.5, -0.0, 1.0, 6.0]
    assert torch.signbit(elements[0, 5])


def test_mxfp4_amax_factor_moves_a_would_be_clipped_block_up_one_exponent():
    # 1.8 alone: floor(log2 1.8) − 2 = −2 would scale it to 7.2 and clip to 6; with the 8/7 factor E = −1
    elements, exponents = mx_quantize(torch.tensor([[1.8] + [0.0] * 31]), MXFP4)
    assert exponents.tolist() == [[126]]
    assert elements[0, 0].item() == 4.0
    assert mx_dequantize(elements, exponents)[0, 0].item() == 2.0


def test_mxfp8_blocks_run_along_the_input_dim_with_padding():
    x = torch.zeros(2, 40)
    x[0, :32] = 1.0  # block 0 of row 0: amax 1 -> E = 0 − 8 = −8 -> stored 119
    x[0, 33] = 448.0  # block 1 of row 0 (8 real columns + padding): E = 8 − 8 = 0 -> stored 127
    x[0, 34] = 17.0  # E4M3 step at 16..32 is 2: 17 -> 18 (half away from zero)
    x[0, 35] = 0.001  # subnormal step 2^−9: 0.001 -> 2^−9
    elements, exponents = mx_quantize(x, MXFP8)
    assert exponents.shape == (2, 2)
    assert exponents.tolist() == [[119, 127], [0, 0]]  # all-zero blocks get the smallest exponent
    assert elements[0, 0].item() == 256.0
    assert elements[0, 33:36].tolist() == [448.0, 18.0, 2.0**-9]
    assert torch.equal(elements.to(torch.float8_e4m3fn).float(), elements)  # representable as saved
    assert mx_dequantize(elements, exponents)[0, 0].item() == 1.0


def test_fp8_weight_scale_maps_each_row_maximum_to_448():
    weight = torch.tensor([[2.0, -1.0, 0.25], [0.0, 0.0, 0.0]])
    values, scale = fp8_channel_quantize(weight)
    assert values.dtype == torch.float8_e4m3fn
    assert scale[:, 0].tolist() == pytest.approx([2.0 / 448, 1e-12 / 448])
    assert values.float()[0].tolist() == [448.0, -224.0, 56.0]
    assert values.float()[1].tolist() == [0.0, 0.0, 0.0]


def test_scale_bias_per_row_and_per_tensor_parallel_shard():
    codes = torch.arange(-8, 8, dtype=torch.int8).repeat(2, 2)  # [2, 32]
    scale = torch.tensor([0.5, 2.0])
    assert scale_bias(codes, scale, 1).tolist() == [[8 * 0.5 * -16], [8 * 2.0 * -16]]
    sharded = scale_bias(codes, scale, 16)  # shards of 2 columns: (-8,-7), (-6,-5), ...
    assert sharded.shape == (2, 16)
    assert sharded[0, :3].tolist() == [8 * 0.5 * -15, 8 * 0.5 * -11, 8 * 0.5 * -7]


def test_scale_bias_equals_the_float64_sum_of_dequantized_codes_bit_for_bit():
    """The integer-sum form (no float64 copy of the weight) is exact: the same float32 as summing codes * scale
    in float64, on random codes of a real row width and awkward scales."""
    generator = torch.Generator().manual_seed(1)
    codes = torch.randint(-8, 8, (64, 7168), dtype=torch.int8, generator=generator)
    scale = torch.rand(64, generator=generator) * 10.0 ** torch.randint(-6, 3, (64,), generator=generator)
    for chunks in (1, 16):
        reference = (8 * (codes.double() * scale.double()[:, None]).reshape(64, chunks, -1).sum(-1)).float()
        assert torch.equal(scale_bias(codes, scale, chunks), reference)


def test_int4_packing_matches_the_nibble_definition_on_random_codes():
    codes = torch.randint(-8, 8, (6, 64), dtype=torch.int8, generator=torch.Generator().manual_seed(2))
    nibbles = codes.to(torch.int16) & 0xF
    expected = (nibbles[0::2] | (nibbles[1::2] << 4)).to(torch.uint8).view(torch.int8)
    assert torch.equal(pack_int4_rows(codes), expected)


@pytest.mark.parametrize(
    "name, chunks",
    [("model.layers.0.mlp.down_proj", 16), ("model.layers.0.self_attn.o_proj", 16), ("model.layers.0.mlp.experts.3.w2", 16),
     ("model.layers.0.mlp.gate_proj", 1), ("model.layers.0.self_attn.q_proj", 1), ("model.layers.0.mlp.experts.3.w1", 1),
     ("lm_head", 1)],
)
def test_scale_bias_layout_follows_the_module_role(name, chunks):
    assert scale_bias_chunks(name) == chunks


def test_layout_problems_name_what_cannot_be_packed():
    assert layout_problems("W4A8_DYNAMIC", "m.mlp.up_proj", 64, 100) == []
    assert "output dimension 63 is odd" in layout_problems("W4A8_DYNAMIC", "m.mlp.up_proj", 63, 64)[0]
    assert "into 16 shards" in layout_problems("W4A8_DYNAMIC", "m.mlp.down_proj", 64, 100)[0]
    assert "input dimension 33 is odd" in layout_problems("W4A4_MXFP4", "m.q_proj", 64, 33)[0]
    assert layout_problems("W8A8_MXFP8", "m.q_proj", 64, 33) == []  # scales pad to ceil(in/32); nothing is packed
