"""Data-free quantizers measure the weight error while they quantize (one float32 pass): the codes and the
reported statistics must be those of quantizing first and measuring after."""

from __future__ import annotations

import pytest
import torch
from torch import nn

from modelslim_core.debug.recorder import Recorder
from modelslim_core.protocol.qconfig import LinearQConfig
from modelslim_core.quant.int_affine import quantize, quantize_measured
from modelslim_core.quant.layer_stats import DEBUG_NAMESPACE, record_weight
from modelslim_core.quant.quantized_linear import LinearQuantizer
from modelslim_core.quant.row_blocks import BLOCK_BYTES


def test_quantize_measured_by_hand():
    # absmax 1.75 -> scale 0.25 at 4 bits; -0.875 / 0.25 = -3.5 rounds half to even to -4, dequantized -1.0
    x = torch.tensor([[1.75, -0.875, 0.25]], dtype=torch.bfloat16)
    scale, offset = torch.tensor([[0.25]]), torch.zeros(1, 1)
    codes, x32, error = quantize_measured(x, scale, offset, 4)
    assert codes.tolist() == [[7, -4, 1]]
    assert x32.dtype == torch.float32 and x32.tolist() == [[1.75, -0.875, 0.25]]
    assert error.tolist() == [[0.0, -0.125, 0.0]]
    # asymmetric: offset 2 shifts the codes and is taken off again before the error
    codes, _, error = quantize_measured(x, scale, torch.full((1, 1), 2.0), 4)
    assert codes.tolist() == [[7, -2, 3]]  # 7 + 2 clamps to 7 -> dequantized 1.25
    assert error.tolist() == [[-0.5, -0.125, 0.0]]


def _linear(rows: int, columns: int, dtype: torch.dtype) -> nn.Linear:
    linear = nn.Linear(columns, rows, bias=False, dtype=dtype)
    with torch.no_grad():
        linear.weight.copy_(torch.randn(rows, columns, generator=torch.Generator().manual_seed(rows)) * 0.02)
        linear.weight[3] = 0.0  # an all-zero row (scale clamped to eps)
    return linear


@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float32])
@pytest.mark.parametrize(("bits", "symmetric", "group_size"),
                         [("int8", True, 0), ("int4", True, 0), ("int4", False, 128), ("int8", False, 0)])
@pytest.mark.parametrize("debug", [False, True])
def test_fused_measurement_matches_quantize_then_measure(dtype, bits, symmetric, group_size, debug, tmp_path):
    columns = 1024
    rows = BLOCK_BYTES // (4 * columns) + 37  # two row blocks, the second one partial
    ext = {"group_size": group_size} if group_size else {}
    qconfig = LinearQConfig.model_validate({
        "act": ({"scope": "per_token", "dtype": "int8", "symmetric": True, "method": "minmax"} if symmetric
                else {"scope": "per_tensor", "dtype": "float", "symmetric": True, "method": "none"}),  # asymmetric: weight-only
        "weight": {"scope": "per_group" if group_size else "per_channel", "dtype": bits, "symmetric": symmetric,
                   "method": "minmax", "ext": ext}})
    quantizer = LinearQuantizer(qconfig)
    linear = _linear(rows, columns, dtype)
    separate, fused = Recorder(tmp_path / "a" if debug else None), Recorder(tmp_path / "b" if debug else None)
    qweight = quantizer.quantize_weight("w", linear)
    record_weight(separate, "w", "x", linear.weight, qweight)
    fused_weight, measured = quantizer.quantize_weight_measured("w", linear, debug)
    measured.record(fused, "w", "x", tuple(linear.weight.shape))
    for name, buffer in qweight.named_buffers():
        assert torch.equal(buffer, fused_weight.get_buffer(name)), name
    assert separate.stats == fused.stats
    assert 0 < fused.stats["layers"]["w"]["weight_rel_error"] < 0.2
    if debug:
        for key in ("w.weight_absmax", "w.weight_rel_error"):
            assert torch.equal(separate.debug_records[DEBUG_NAMESPACE][key], fused.debug_records[DEBUG_NAMESPACE][key])


def test_fused_codes_are_quantize_codes_on_a_block():
    x = torch.randn(64, 256, generator=torch.Generator().manual_seed(1)).to(torch.bfloat16)
    scale = x.float().abs().amax(dim=1, keepdim=True) / 127
    offset = torch.zeros_like(scale)
    codes, _, error = quantize_measured(x, scale, offset, 8)
    assert torch.equal(codes, quantize(x, scale, offset, 8))
    assert torch.equal(error, codes.float() * scale - x.float())
