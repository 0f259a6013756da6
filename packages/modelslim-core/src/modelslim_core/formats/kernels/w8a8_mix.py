"""W8A8_MIX: the W8A8 static set for decode steps plus per-channel weight scales for a dynamic prefill.

A forward with one token per sequence (a decode step) runs the static kernel: calibrated asymmetric
per-tensor input, deq_scale and quant_bias. A prefill (several tokens) quantizes per token dynamically
and uses weight_scale and the float bias, as vLLM-Ascend's W8A8_MIX scheme does.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.quant.activations import is_decode_step
from modelslim_core.formats.kernels.base import LinearKernel, LinearShape, TensorSpec
from modelslim_core.formats.kernels.dynamic_int import DynamicIntLinear
from modelslim_core.formats.kernels.w8a8 import W8A8Kernel, W8A8StaticLinear


class W8A8MixLinear(nn.Module):
    def __init__(self, tensors: dict[str, torch.Tensor]):
        super().__init__()
        self.decode = W8A8StaticLinear(tensors)
        self.prefill = DynamicIntLinear(tensors["weight"], tensors["weight_scale"], tensors["weight_offset"], tensors["bias"], 8)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.decode(x) if is_decode_step(x) else self.prefill(x)


class W8A8MixKernel(LinearKernel):
    tag = "W8A8_MIX"

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        column = (shape.out_features, 1)
        return {
            **W8A8Kernel().expected(shape),
            "weight_scale": TensorSpec((torch.float32,), column),
            "weight_offset": TensorSpec((torch.float32,), column),
        }

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        return W8A8MixLinear(tensors)
