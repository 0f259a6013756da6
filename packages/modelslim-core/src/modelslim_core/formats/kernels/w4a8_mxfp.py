"""W4A8_MXFP: MXFP8 activations × MXFP4 weights."""

from __future__ import annotations

from modelslim_core.formats.kernels.mxfp4_weight import MXFP4WeightKernel


class W4A8MXFPKernel(MXFP4WeightKernel):
    tag = "W4A8_MXFP"
    act_format = "mxfp8"
