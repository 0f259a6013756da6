"""W4A4_MXFP4_DUALSCALE: dual-scale MXFP4 activations × dual-scale MXFP4 weights.

Weight = FP4 elements · 2^(weight_scale − 127) per 32 input columns, times the float32 `weight_dual_scale`
S per dual block (`[out, in/dual, 1]`; the dual block size is in / its second dim). The input is quantized
at run time by the same rule (S = amax/6 per dual block of its columns, then MXFP4 per 32).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modelslim_core.errors import CheckpointError
from modelslim_core.quant.mx_scales import dual_scale_dequantize, dual_scale_fake_quantize
from modelslim_core.quant.packing import fp4_values, unpack_fp4
from modelslim_core.quant.schemes import MX_BLOCK
from modelslim_core.formats.kernels.base import LinearKernel, LinearShape, TensorSpec, float_bias_spec


class DualScaleLinear(nn.Module):
    def __init__(self, weight: torch.Tensor, bias: torch.Tensor | None, dual_block_size: int):
        super().__init__()
        self.dual_block_size = dual_block_size
        self.register_buffer("weight", weight)
        self.register_buffer("bias", None if bias is None else bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(dual_scale_fake_quantize(x.float(), self.dual_block_size), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


class W4A4MXFP4DualScaleKernel(LinearKernel):
    tag = "W4A4_MXFP4_DUALSCALE"

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        out, inp = shape.out_features, shape.in_features
        return {
            "weight": TensorSpec((torch.uint8,), (out, inp // 2)),
            "weight_scale": TensorSpec((torch.uint8,), (out, math.ceil(inp / MX_BLOCK))),
            # one shape per dual block size that divides the input (checked again in build)
            "weight_dual_scale": TensorSpec((torch.float32,), (out, 1, 1),
                                            tuple((out, inp // size, 1) for size in range(MX_BLOCK, inp, MX_BLOCK)
                                                  if inp % size == 0)),
            **float_bias_spec(shape),
        }

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        scale = tensors["weight_dual_scale"].float().squeeze(-1)
        if shape.in_features % scale.shape[-1]:
            raise CheckpointError(f"{shape.name}.weight_dual_scale has {scale.shape[-1]} blocks, which do not divide "
                                  f"the input dimension {shape.in_features}.", "re-run the quantization.")
        elements = fp4_values(unpack_fp4(tensors["weight"]))
        weight = dual_scale_dequantize(elements, tensors["weight_scale"], scale)
        return DualScaleLinear(weight, tensors.get("bias"), shape.in_features // scale.shape[-1])
