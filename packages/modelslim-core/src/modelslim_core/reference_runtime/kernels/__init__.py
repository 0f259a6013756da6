"""One kernel per ascendv1 linear tag; a new quant type adds one file here and one line in KERNELS."""

from __future__ import annotations

from modelslim_core.reference_runtime.kernels.base import LinearKernel, LinearShape, TensorSpec
from modelslim_core.reference_runtime.kernels.w4a4_dynamic import W4A4DynamicKernel
from modelslim_core.reference_runtime.kernels.w4a4_mxfp4 import W4A4MXFP4Kernel
from modelslim_core.reference_runtime.kernels.w4a4_mxfp4_dualscale import W4A4MXFP4DualScaleKernel
from modelslim_core.reference_runtime.kernels.w4a8_dynamic import W4A8DynamicKernel
from modelslim_core.reference_runtime.kernels.w4a8_mxfp import W4A8MXFPKernel
from modelslim_core.reference_runtime.kernels.w8a8 import W8A8Kernel
from modelslim_core.reference_runtime.kernels.w8a8_dynamic import W8A8DynamicKernel
from modelslim_core.reference_runtime.kernels.w8a8_mix import W8A8MixKernel
from modelslim_core.reference_runtime.kernels.w8a8_mxfp8 import W8A8MXFP8Kernel
from modelslim_core.reference_runtime.kernels.w8a8s import W8A8SKernel
from modelslim_core.reference_runtime.kernels.w16a16s import W16A16SKernel
from modelslim_core.reference_runtime.kernels.w8a16 import W8A16Kernel
from modelslim_core.reference_runtime.kernels.w8a8fp8_dynamic import W8A8FP8DynamicKernel

KERNELS: dict[str, LinearKernel] = {
    kernel.tag: kernel
    for kernel in (
        W8A8Kernel(),
        W8A8MixKernel(),
        W8A8DynamicKernel(),
        W8A16Kernel(),
        W4A8DynamicKernel(),
        W4A4DynamicKernel(),
        W8A8FP8DynamicKernel(),
        W8A8MXFP8Kernel(),
        W4A8MXFPKernel(),
        W4A4MXFP4Kernel(),
        W4A4MXFP4DualScaleKernel(),
        W8A8SKernel(),
        W16A16SKernel(),
    )
}
#: The reference tool's name for the same layout (vLLM-Ascend's scheme is W8A8FP8_DYNAMIC): older checkpoints load.
KERNELS["WFP8AFP8_DYNAMIC"] = KERNELS["W8A8FP8_DYNAMIC"]

__all__ = ["KERNELS", "LinearKernel", "LinearShape", "TensorSpec"]
