"""W8A8 static: y = deq_scale · (x_q · W_qᵀ + quant_bias), x_q = clamp(round(x / input_scale) + input_offset, -128, 127)."""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.formats.kernels.int_gemm import FLOAT32_EXACT, IntWeight
from modelslim_core.formats.kernels.base import LinearKernel, LinearShape, TensorSpec
from modelslim_core.formats.kernels.shared_input import reuse


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
        # When every accumulator value (products plus quant_bias) is an integer below 2^24, float32 holds it
        # exactly, and one float32 multiply by the float32 deq_scale rounds exactly as float64 then float32
        # would: the whole epilogue can stay in float32 with the very same result.
        largest = self.gemm.bound + int(self.quant_bias.abs().max()) if self.quant_bias.numel() else self.gemm.bound
        self.float32_exact = len(self.gemm.runs) == 1 and largest < FLOAT32_EXACT
        self.register_buffer("quant_bias_f32", self.quant_bias.float(), persistent=False)
        self.register_buffer("deq_scale_f32", self.deq_scale.float(), persistent=False)
        # q/k/v (gate/up) calibrated on one input often share its scale and offset: then one quantization
        # serves them all (shared_input.py); the key holds their bits (-0.0 is not 0.0 here), so different
        # ones never share
        bits = torch.cat([self.input_scale.flatten(), self.input_offset.flatten()]).view(torch.int32)
        self.input_key = ("static", *bits.tolist())

    def _codes(self, x: torch.Tensor) -> torch.Tensor:
        return x.float().div(self.input_scale).round_().add_(self.input_offset).clamp_(-128, 127)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        codes = reuse(x, self.input_key, self._codes)  # read-only: shared with the siblings
        if self.float32_exact:
            return (codes @ self.gemm.transposed).add_(self.quant_bias_f32).mul_(self.deq_scale_f32).to(x.dtype)
        accumulated = self.gemm.matmul(codes) + self.quant_bias
        return (accumulated * self.deq_scale).to(x.dtype)


class W8A8Kernel(LinearKernel):
    tag = "W8A8"

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        out = shape.out_features
        deq_dtype = shape.deq_scale_dtype
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
