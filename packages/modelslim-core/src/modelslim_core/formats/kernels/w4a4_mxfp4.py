"""W4A4_MXFP4: MXFP4 activations × MXFP4 weights."""

from __future__ import annotations

from modelslim_core.formats.kernels.mxfp4_weight import MXFP4WeightKernel


class W4A4MXFP4Kernel(MXFP4WeightKernel):
    tag = "W4A4_MXFP4"
    act_format = "mxfp4"
