"""What happens to a quantized linear's input at run time, simulated in float: one module per activation kind.

Dynamic kinds compute their parameters from each input (per token, or per MX block); static kinds carry
calibrated parameters (buffers, so they move with the layer and the saver can read them). The reference
runtime's kernels implement the same arithmetic from the saved tensors, which is what lets the tests
compare the two.
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.quant.fp8 import fake_quantize_per_token_fp8
from modelslim_core.quant.int_affine import fake_quantize, fake_quantize_per_token_sym
from modelslim_core.quant.mx import MX_FORMATS, mx_fake_quantize
from modelslim_core.quant.mx_scales import dual_scale_fake_quantize


class FloatAct(nn.Module):
    """Weight-only schemes: the input stays float."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x


class DynamicIntAct(nn.Module):
    """Symmetric per-token integer quantization (int8 or int4) computed at run time."""

    def __init__(self, bits: int):
        super().__init__()
        self.bits = bits

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize_per_token_sym(x, self.bits)


class DynamicFP8Act(nn.Module):
    """Per-token FP8 E4M3 quantization computed at run time."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize_per_token_fp8(x)


class DynamicMXAct(nn.Module):
    """MX quantization of the input in blocks of 32 along its last dim, computed at run time."""

    def __init__(self, fmt: str):
        super().__init__()
        self.fmt = MX_FORMATS[fmt]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return mx_fake_quantize(x, self.fmt)


class DynamicDualScaleMXAct(nn.Module):
    """Dual-scale MXFP4 of the input (outer scale per `dual_block_size` columns), computed at run time."""

    def __init__(self, dual_block_size: int):
        super().__init__()
        self.dual_block_size = dual_block_size

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return dual_scale_fake_quantize(x, self.dual_block_size)


class StaticIntAct(nn.Module):
    """Per-tensor integer quantization with calibrated scale/offset (`[1]` each)."""

    def __init__(self, scale: torch.Tensor, offset: torch.Tensor, bits: int):
        super().__init__()
        self.bits = bits
        self.register_buffer("scale", scale.float().reshape(1))
        self.register_buffer("offset", offset.float().reshape(1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return fake_quantize(x, self.scale, self.offset, self.bits)


def is_decode_step(x: torch.Tensor) -> bool:
    """One token per sequence (the token dim, second to last, has size 1): a decode step, not a prefill."""
    return x.dim() >= 2 and x.shape[-2] == 1


class PdMixAct(StaticIntAct):
    """W8A8_MIX: decode steps use the calibrated static asymmetric int8 parameters, prefill (several tokens
    per sequence) quantizes dynamically per token, as vLLM-Ascend's W8A8_MIX scheme does."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if is_decode_step(x):
            return super().forward(x)
        return fake_quantize_per_token_sym(x, self.bits)
