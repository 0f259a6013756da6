"""W4A4_DYNAMIC: per-token symmetric int4 activations; int4 weights saved UNPACKED in int8, per channel or group."""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.errors import CheckpointError
from modelslim_core.formats.kernels.base import LinearShape
from modelslim_core.formats.kernels.w8a8_dynamic import DynamicIntKernel


class W4A4DynamicKernel(DynamicIntKernel):
    tag = "W4A4_DYNAMIC"
    act_bits = 4

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        weight = tensors["weight"]
        if weight.numel() and (weight.min() < -8 or weight.max() > 7):
            raise CheckpointError(f"{shape.name}.weight holds values outside the int4 range -8..7.",
                                  "W4A4_DYNAMIC weights are unpacked int4 codes; re-run the quantization.")
        return super().build(tensors, shape)
