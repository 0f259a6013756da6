"""W16A16S: a pruned FP16 weight (and FP16 bias) used as is: y = x·Wᵀ + b, computed in the activations' dtype.

The sparsity and the 2-bit mantissas are properties of the values, not of the format, so the kernel only
checks that the tensors are FP16 of the linear's shape.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from modelslim_core.formats.kernels.base import LinearKernel, LinearShape, TensorSpec


class W16A16SLinear(nn.Module):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.register_buffer("weight", tensors["weight"].float())
        self.register_buffer("bias", tensors["bias"].float() if "bias" in tensors else None)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        bias = None if self.bias is None else self.bias.to(x.dtype)
        return F.linear(x, self.weight.to(x.dtype), bias)


class W16A16SKernel(LinearKernel):
    tag = "W16A16S"

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        specs = {"weight": TensorSpec((torch.float16,), (shape.out_features, shape.in_features))}
        if shape.has_bias:
            specs["bias"] = TensorSpec((torch.float16,), (shape.out_features,))
        return specs

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        return W16A16SLinear(tensors)
