"""W8A8_DYNAMIC: per-token symmetric int8 activations; int8 weights per channel or per group."""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.formats.kernels.base import LinearKernel, LinearShape, TensorSpec, check_same_shape, float_bias_spec, int_weight_specs
from modelslim_core.formats.kernels.dynamic_int import DynamicIntLinear


class DynamicIntKernel(LinearKernel):
    """Unpacked int8-container weights with dynamic per-token activations of `act_bits` bits."""

    act_bits = 8

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        return {**int_weight_specs(shape), **float_bias_spec(shape)}

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        check_same_shape(tensors, "weight_scale", "weight_offset", shape.name)
        return DynamicIntLinear(tensors["weight"], tensors["weight_scale"], tensors["weight_offset"], tensors.get("bias"), self.act_bits)


class W8A8DynamicKernel(DynamicIntKernel):
    tag = "W8A8_DYNAMIC"
