"""One kernel per ascendv1 linear tag; a new quant type adds one file here and one line in KERNELS."""

from __future__ import annotations

from modelslim_core.reference_runtime.kernels.base import LinearKernel, LinearShape, TensorSpec
from modelslim_core.reference_runtime.kernels.w8a8 import W8A8Kernel
from modelslim_core.reference_runtime.kernels.w8a8_dynamic import W8A8DynamicKernel
from modelslim_core.reference_runtime.kernels.w8a16 import W8A16Kernel

KERNELS: dict[str, LinearKernel] = {kernel.tag: kernel for kernel in (W8A8Kernel(), W8A8DynamicKernel(), W8A16Kernel())}

__all__ = ["KERNELS", "LinearKernel", "LinearShape", "TensorSpec"]
