"""W8A8S: sparse int8 weights in the W8A8 static tensor set, so the W8A8 integer identity computes it."""

from __future__ import annotations

from modelslim_core.formats.kernels.w8a8 import W8A8Kernel


class W8A8SKernel(W8A8Kernel):
    tag = "W8A8S"
