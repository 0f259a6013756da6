"""W4A8_DYNAMIC: per-token int8 activations; int4 per-channel weights packed two output rows per byte.

The kernel unpacks the weight (low nibble = even row), checks that the saved `scale_bias` is what the format
defines for this linear's role (8 · Σ W_q·s per row, or per 16-way input shard for row-parallel linears)
and that the offsets are zero, then computes like W8A8_DYNAMIC.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.errors import CheckpointError
from modelslim_core.quant.packing import unpack_int4_rows
from modelslim_core.quant.scale_bias import scale_bias, scale_bias_chunks
from modelslim_core.formats.kernels.base import LinearKernel, LinearShape, TensorSpec, float_bias_spec
from modelslim_core.formats.kernels.dynamic_int import DynamicIntLinear


class W4A8DynamicKernel(LinearKernel):
    tag = "W4A8_DYNAMIC"

    def expected(self, shape: LinearShape) -> dict[str, TensorSpec]:
        out, column = shape.out_features, (shape.out_features, 1)
        return {
            "weight": TensorSpec((torch.int8,), (out // 2, shape.in_features)),
            "weight_scale": TensorSpec((torch.float32,), column),
            "weight_offset": TensorSpec((torch.float32,), column),
            "scale_bias": TensorSpec((torch.float32,), (out, scale_bias_chunks(shape.name))),
            **float_bias_spec(shape),
        }

    def build(self, tensors: dict[str, torch.Tensor], shape: LinearShape) -> nn.Module:
        codes = unpack_int4_rows(tensors["weight"])
        scale, offset = tensors["weight_scale"], tensors["weight_offset"]
        if bool((offset != 0).any()):
            raise CheckpointError(f"{shape.name}.weight_offset is not all zero.",
                                  "W4A8_DYNAMIC weights are symmetric; re-run the quantization.")
        expected = scale_bias(codes, scale, scale_bias_chunks(shape.name))
        if not torch.allclose(tensors["scale_bias"], expected, rtol=1e-5, atol=1e-6):
            raise CheckpointError(f"{shape.name}.scale_bias does not equal 8 · Σ weight · weight_scale of the saved weight.",
                                  "the checkpoint is corrupted or written by an incompatible tool; re-run the quantization.")
        return DynamicIntLinear(codes, scale, offset, tensors.get("bias"), act_bits=8)
