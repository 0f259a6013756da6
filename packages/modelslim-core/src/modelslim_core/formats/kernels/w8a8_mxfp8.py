"""W8A8_MXFP8: MXFP8 activations × MXFP8 weights (E4M3 elements saved as float8_e4m3fn, uint8 E8M0 scales)."""

from __future__ import annotations

import torch

from modelslim_core.formats.kernels.mx_linear import MXKernel


class W8A8MXFP8Kernel(MXKernel):
    tag = "W8A8_MXFP8"
    act_format = "mxfp8"
    weight_dtype = torch.float8_e4m3fn
    elements_per_byte = 1
