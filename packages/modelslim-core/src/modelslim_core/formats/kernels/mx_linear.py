"""The arithmetic all MX linear types share: MX-quantized activations × MX weights.

The input is quantized at run time in blocks of 32 along its last dim (the activation format's elements
and E8M0 exponents); the weight is elements · 2^(weight_scale − 127) per block of 32 input columns. Both
sides are exact in float32 (power-of-two scaling), so y = dequant(x) · dequant(W)ᵀ + bias.
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import nn

from modelslim_core.errors import CheckpointError
from modelslim_core.quant.mx import MX_FORMATS, mx_dequantize, mx_fake_quantize
from modelslim_core.quant.schemes import MX_BLOCK
from modelslim_core.formats.kernels.base import LinearKernel, LinearShape, TensorSpec, float_bias_spec

E8M0_NAN = 255


class MXLinear(nn.Module):
    def __init__(self, elements: torch.Tensor, exponents: torch.Tensor, bias: torch.Tensor | None, act_format: str):
        super().__init__()
        self.act_format = MX_FORMATS[act_format]
        self.register_buffer("weight", mx_dequantize(elements, exponents))
        self.register_buffer("bias", None if bias is None else bias.float())

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        y = F.linear(mx_fake_quantize(x.float(), self.act_format), self.weight)
        if self.bias is not None:
            y = y + self.bias
        return y.to(x.dtype)


class MXKernel(LinearKernel):
    """An MX linear type: how its weight elements are stored, and its activation format."""

    act_format: str
    weight_dtype: torch.dtype
    elements_per_byte: int

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        out = shape.out_features
        return {
            "weight": TensorSpec((self.weight_dtype,), (out, shape.in_features // self.elements_per_byte)),
            "weight_scale": TensorSpec((torch.uint8,), (out, math.ceil(shape.in_features / MX_BLOCK))),
            **float_bias_spec(shape),
        }

    def elements(self, weight: torch.Tensor) -> torch.Tensor:
        """float32 element values [out, in] of the saved weight."""
        return weight.float()

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        exponents = tensors["weight_scale"]
        if bool((exponents == E8M0_NAN).any()):
            raise CheckpointError(f"{shape.name}.weight_scale holds the E8M0 NaN code 255.",
                                  "the checkpoint is corrupted; re-run the quantization.")
        return MXLinear(self.elements(tensors["weight"]), exponents, tensors.get("bias"), self.act_format)
