"""QuantizedLinear's float weight copy: built in the inputs' dtype, dropped when its unit is done, rebuilt on use."""

import torch
from torch import nn

from modelslim_core.quant.int_affine import dequantize_grouped
from modelslim_core.quant.quantized_linear import QuantizedLinear, release_float_copies
from modelslim_core.quant.weight_formats import IntWeight
from modelslim_core.runtime.unit import Unit
from modelslim_runners.placement import Placement


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
    assert layer._dequantized is not None
    layer.release_float_copy()
    assert layer._dequantized is None
    torch.testing.assert_close(layer(x), expected)


def test_float_copy_is_kept_in_the_input_dtype():
    layer = _layer()
    out = layer(torch.ones(1, 4, dtype=torch.bfloat16))
    assert out.dtype == torch.bfloat16 and layer._dequantized.dtype == torch.bfloat16
    expected = dequantize_grouped(layer.qweight.codes, layer.qweight.scale, layer.qweight.offset).to(torch.bfloat16)
    assert torch.equal(layer._dequantized, expected)
    layer(torch.ones(1, 4))  # a float32 caller gets a float32 copy, not a bf16-rounded one
    assert layer._dequantized.dtype == torch.float32


def test_leaving_a_unit_drops_every_float_copy_inside_it():
    block = nn.ModuleList([_layer(), _layer()])
    for layer in block:
        layer(torch.ones(1, 4))
    assert all(layer._dequantized is not None for layer in block)
    placement = Placement.__new__(Placement)  # the base placement (model-wise): nothing to move, copies to drop
    placement.leave(Unit("block", block, 0))
    assert all(layer._dequantized is None for layer in block)


def test_release_float_copies_ignores_other_modules():
    mixed = nn.Sequential(nn.Linear(4, 4), _layer())
    mixed[1](torch.ones(1, 4))
    release_float_copies(mixed)
    assert mixed[1]._dequantized is None
