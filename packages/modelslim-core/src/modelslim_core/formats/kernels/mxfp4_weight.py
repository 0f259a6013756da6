"""MXFP4 weights as saved: FP4 E2M1 codes packed two per byte along the input dim, low nibble first."""

from __future__ import annotations

import torch

from modelslim_core.quant.packing import fp4_values, unpack_fp4
from modelslim_core.formats.kernels.mx_linear import MXKernel


class MXFP4WeightKernel(MXKernel):
    weight_dtype = torch.uint8
    elements_per_byte = 2

    def elements(self, weight: torch.Tensor) -> torch.Tensor:
        return fp4_values(unpack_fp4(weight))
