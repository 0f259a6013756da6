"""W8A16: float activations, int8 weights dequantized as (W_q − offset) · scale, per channel or per group."""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelslim_core.quant.int_affine import dequantize_grouped
from modelslim_core.formats.kernels.base import LinearKernel, LinearShape, TensorSpec, check_same_shape, float_bias_spec, int_weight_specs


class W8A16Linear(nn.Module):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        weight = dequantize_grouped(tensors["weight"], tensors["weight_scale"], tensors["weight_offset"])
        self.register_buffer("weight", weight)
        self.register_buffer("bias", tensors["bias"].float() if "bias" in tensors else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class W8A16Kernel(LinearKernel):
    tag = "W8A16"

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        return {**int_weight_specs(shape), **float_bias_spec(shape)}

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        check_same_shape(tensors, "weight_scale", "weight_offset", shape.name)
        return W8A16Linear(tensors)
