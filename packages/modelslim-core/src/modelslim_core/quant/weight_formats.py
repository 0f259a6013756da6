"""How a quantized weight is held between quantization and saving: one small module per number format.

Each container keeps exactly the tensors a saver needs (as buffers, so runners can move them between
devices) and can reproduce the float weight it stands for, which is what the quantizer's simulation and
the tests compare against. `group_size` is what the checkpoint's global `group_size` key reports for it.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.quant.int_affine import dequantize_grouped
from modelslim_core.quant.mx import MX_FORMATS, mx_dequantize
from modelslim_core.quant.mx_scales import dual_scale_dequantize
from modelslim_core.quant.schemes import MX_BLOCK


class IntWeight(nn.Module):
    """Integer codes [out, in] (int8 container, int4 values stay in -8..7) with scale/offset [out, groups].

    groups = 1 is per-channel; otherwise each row is split into groups of `group_size` consecutive input
    columns. x ≈ (codes − offset) · scale.
    """

    def __init__(self, codes: torch.Tensor, scale: torch.Tensor, offset: torch.Tensor, bits: int, group_size: int = 0):
        super().__init__()
        out = codes.shape[0]
        self.bits = bits
        self.group_size = group_size
        self.register_buffer("codes", codes.to(torch.int8))
        self.register_buffer("scale", scale.float().reshape(out, -1))
        self.register_buffer("offset", offset.float().reshape(out, -1))

    @property
    def shape(self) -> tuple[int, int]:
        """[out, in] of the original weight."""
        return tuple(self.codes.shape)

    def dequantize(self) -> torch.Tensor:
        return dequantize_grouped(self.codes, self.scale, self.offset)


class FP8Weight(nn.Module):
    """float8_e4m3fn values [out, in] with a per-output-channel float32 scale [out, 1]; x ≈ values · scale."""

    group_size = 0

    def __init__(self, values: torch.Tensor, scale: torch.Tensor):
        super().__init__()
        self.register_buffer("values", values.to(torch.float8_e4m3fn))
        self.register_buffer("scale", scale.float().reshape(-1, 1))

    @property
    def shape(self) -> tuple[int, int]:
        """[out, in] of the original weight."""
        return tuple(self.values.shape)

    def dequantize(self) -> torch.Tensor:
        return self.values.float() * self.scale


class MXWeight(nn.Module):
    """MX block format: element values [out, in] and one E8M0 exponent per 32 input columns [out, ceil(in/32)].

    Elements of both MXFP8 (E4M3) and MXFP4 (E2M1) are held as float8_e4m3fn: every E2M1 value (±0 … ±6)
    is exactly representable there, so one container serves both and the saver packs FP4 codes from it.
    `exponents` are stored biased (E + 127, uint8), exactly as saved.
    """

    group_size = MX_BLOCK

    def __init__(self, elements: torch.Tensor, exponents: torch.Tensor, fmt: str):
        super().__init__()
        self.fmt = MX_FORMATS[fmt]
        self.register_buffer("elements", elements.to(torch.float8_e4m3fn))
        self.register_buffer("exponents", exponents.to(torch.uint8))

    @property
    def shape(self) -> tuple[int, int]:
        """[out, in] of the original weight."""
        return tuple(self.elements.shape)

    def dequantize(self) -> torch.Tensor:
        return mx_dequantize(self.elements.float(), self.exponents)


class DualScaleMXWeight(MXWeight):
    """Dual-scale MXFP4: MXFP4 elements and exponents of W / S, and the float32 outer scale S
    `[out, in / dual_block_size]`; W ≈ elements · 2^(E − 127) · S."""

    def __init__(self, elements: torch.Tensor, exponents: torch.Tensor, dual_scale: torch.Tensor):
        super().__init__(elements, exponents, "mxfp4")
        self.register_buffer("dual_scale", dual_scale.float())

    @property
    def dual_block_size(self) -> int:
        return self.elements.shape[-1] // self.dual_scale.shape[-1]

    def dequantize(self) -> torch.Tensor:
        return dual_scale_dequantize(self.elements.float(), self.exponents, self.dual_scale)


class FP16Weight(nn.Module):
    """Float weight values kept as FP16 [out, in] (W16A16S: pruned and mantissa-compressed, see sparsity/)."""

    group_size = 0

    def __init__(self, values: torch.Tensor):
        super().__init__()
        self.register_buffer("values", values.to(torch.float16))

    @property
    def shape(self) -> tuple[int, int]:
        """[out, in] of the original weight."""
        return tuple(self.values.shape)

    def dequantize(self) -> torch.Tensor:
        return self.values.float()
