"""W8A8 static: y = deq_scale · (x_q · W_qᵀ + quant_bias), x_q = clamp(round(x / input_scale) + input_offset, -128, 127)."""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.reference_runtime.int_gemm import IntWeight
from modelslim_core.reference_runtime.kernels.base import LinearKernel, LinearShape, TensorSpec


def deq_scale_as_float(deq_scale: torch.Tensor) -> torch.Tensor:
    """deq_scale is fp32 for bf16 models and an int64 holding the fp32 bit pattern otherwise."""
    if deq_scale.dtype == torch.int64:
        return deq_scale.to(torch.int32).view(torch.float32)
    return deq_scale.float()


class W8A8StaticLinear(nn.Module):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.register_buffer("weight", tensors["weight"])
        self.register_buffer("quant_bias", tensors["quant_bias"].double())
        self.register_buffer("input_scale", tensors["input_scale"].float())
        self.register_buffer("input_offset", tensors["input_offset"].float())
        self.register_buffer("deq_scale", deq_scale_as_float(tensors["deq_scale"]).double())
        self.gemm = IntWeight(tensors["weight"])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = torch.clamp(torch.round(x.float() / self.input_scale) + self.input_offset, -128, 127)
        accumulated = self.gemm.matmul(codes) + self.quant_bias
        return (accumulated * self.deq_scale).to(x.dtype)


class W8A8Kernel(LinearKernel):
    tag = "W8A8"

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        out = shape.out_features
        deq_dtype = torch.float32 if shape.source_dtype == torch.bfloat16 else torch.int64
        return {
            "weight": TensorSpec((torch.int8,), (out, shape.in_features)),
            "quant_bias": TensorSpec((torch.int32,), (out,)),
            "input_scale": TensorSpec((torch.float32,), (1,)),
            "input_offset": TensorSpec((torch.float32,), (1,)),
            "deq_scale": TensorSpec((deq_dtype,), (out,)),
            "bias": TensorSpec((torch.float32,), (out,)),  # folded into quant_bias; kept for engines that read it
        }

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        return W8A8StaticLinear(tensors)
