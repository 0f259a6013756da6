"""One kernel per ascendv1 linear tag; the tag registry (formats/tags.py) names each tag's kernel.

`KERNELS` (tag or alias -> kernel instance) is derived from the registry on first use, never listed here.
"""

from __future__ import annotations

from typing import Any

from modelslim_core.reference_runtime.kernels.base import LinearKernel, LinearShape, TensorSpec


def __getattr__(name: str) -> Any:
    if name == "KERNELS":
        from modelslim_core.formats.tags import TAGS  # noqa: PLC0415 - the registry imports the kernel modules

        return TAGS.kernels()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


__all__ = ["KERNELS", "LinearKernel", "LinearShape", "TensorSpec"]
