"""W8A8_DYNAMIC: per-token symmetric int8 activations; y = (x_q · W_qᵀ) · x_scale · weight_scale + bias."""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.quant.int_affine import SCALE_EPS
from modelslim_core.reference_runtime.int_gemm import int8_matmul
from modelslim_core.reference_runtime.kernels.base import (
    LinearKernel,
    LinearShape,
    TensorSpec,
    float_bias_spec,
    per_channel_weight_specs,
)


def quantize_per_token(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """int8 codes and per-token scales, as the dynamic-quant kernel computes them at run time."""
    x = x.float()
    scale = torch.clamp(x.abs().amax(dim=-1, keepdim=True) / 127, min=SCALE_EPS)
    return torch.clamp(torch.round(x / scale), -128, 127), scale


class W8A8DynamicLinear(nn.Module):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.register_buffer("weight", tensors["weight"])
        self.register_buffer("weight_scale", tensors["weight_scale"].reshape(1, -1).double())
        self.register_buffer("bias", tensors["bias"].float() if "bias" in tensors else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes, scale = quantize_per_token(x)
        y = (int8_matmul(codes, self.weight) * scale.double() * self.weight_scale).float()
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


class W8A8DynamicKernel(LinearKernel):
    tag = "W8A8_DYNAMIC"

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        return {**per_channel_weight_specs(shape), **float_bias_spec(shape)}

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        return W8A8DynamicLinear(tensors)
