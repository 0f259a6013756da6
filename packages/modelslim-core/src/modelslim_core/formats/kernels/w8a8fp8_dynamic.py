"""W8A8FP8_DYNAMIC: per-token FP8 E4M3 activations × per-channel FP8 E4M3 weights.

s_x = max|x_token| / 448, x_8 = fp8(x / s_x); y = (x_8 · W_8ᵀ) · s_x · s_w + bias, the products of FP8 values
accumulated in float32 as the FP8 matmul units do.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.quant.fp8 import quantize_per_token_fp8
from modelslim_core.formats.kernels.base import LinearKernel, LinearShape, TensorSpec, float_bias_spec


class FP8DynamicLinear(nn.Module):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.register_buffer("weight", tensors["weight"])
        self.register_buffer("weight_scale", tensors["weight_scale"].reshape(1, -1).float())
        self.register_buffer("bias", tensors["bias"].float() if "bias" in tensors else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        values, scale = quantize_per_token_fp8(x)
        y = (values.float() @ self.weight.float().T) * scale * self.weight_scale
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


class W8A8FP8DynamicKernel(LinearKernel):
    tag = "W8A8FP8_DYNAMIC"

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        column = (shape.out_features, 1)
        return {
            "weight": TensorSpec((torch.float8_e4m3fn,), (shape.out_features, shape.in_features)),
            "weight_scale": TensorSpec((torch.float32,), column),
            "weight_offset": TensorSpec((torch.float32,), column),
            **float_bias_spec(shape),
        }

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        return FP8DynamicLinear(tensors)
