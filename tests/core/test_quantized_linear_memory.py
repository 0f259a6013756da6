"""QuantizedLinear's dequantized weight: the forward is the hand-computed product, a small copy is cached until its
unit is released, and a release never changes what the layer computes."""

import torch
from torch import nn

from modelslim_core.quant.quantized_linear import QuantizedLinear, release_dequantized
from modelslim_core.quant.weight_formats import IntWeight


def _layer() -> QuantizedLinear:
    codes = torch.tensor([[1, -2, 3, -8], [7, 0, -1, 2]], dtype=torch.int8)
    scale = torch.tensor([[0.5, 0.25], [1.0, 2.0]])  # group size 2
    weight = IntWeight(codes, scale, torch.zeros_like(scale), bits=4, group_size=2)
    return QuantizedLinear("W4A16", weight, nn.Identity(), torch.tensor([0.5, -1.0]))


def test_forward_is_the_dequantized_product_and_survives_a_release():
    layer = _layer()
    x = torch.tensor([[1.0, 2.0, 3.0, 4.0]])
    # row 0: 1*0.5*1 - 2*0.5*2 + 3*0.25*3 - 8*0.25*4 + 0.5 = 0.5 - 2 + 2.25 - 8 + 0.5 = -6.75
    # row 1: 7*1*1 + 0 - 1*2*3 + 2*2*4 - 1 = 7 - 6 + 16 - 1 = 16
    expected = torch.tensor([[-6.75, 16.0]])
    torch.testing.assert_close(layer(x), expected)
    assert layer._dequantized is not None  # small: cached until its unit is done
    release_dequantized(layer)
    assert layer._dequantized is None
    torch.testing.assert_close(layer(x), expected)


def test_a_bf16_caller_gets_a_bf16_result_from_the_float32_arithmetic():
    layer = _layer()
    out = layer(torch.ones(1, 4, dtype=torch.bfloat16))  # rows: 0.5-1+0.75-2+0.5, 7-2+4-1
    assert out.dtype == torch.bfloat16
    torch.testing.assert_close(out, torch.tensor([[-1.25, 8.0]], dtype=torch.bfloat16))


def test_releasing_a_unit_drops_every_copy_inside_it_and_ignores_other_modules():
    block = nn.Sequential(nn.Linear(4, 4), _layer(), _layer())
    for layer in block[1:]:
        layer(torch.ones(1, 4))
    release_dequantized(block)
    assert all(layer._dequantized is None for layer in block[1:])
