"""FP8 E4M3 with a float32 scale: per-output-channel weights and dynamic per-token activations.

scale = max(amax, 1e-12) / 448 (448 is E4M3's largest value); values are x / scale saturated to ±448 and
cast to float8_e4m3fn (round to nearest even). Unlike the reference, whose simulation only clamps and
leaves the mantissa unrounded, the simulation here rounds to the FP8 grid, so it computes what the saved
FP8 tensors compute.
"""

from __future__ import annotations

import torch

FP8_MAX = 448.0
FP8_SCALE_FLOOR = 1e-12


def fp8_scale(amax: torch.Tensor) -> torch.Tensor:
    return torch.clamp(amax.float(), min=FP8_SCALE_FLOOR) / FP8_MAX


def to_fp8(x: torch.Tensor, scale: torch.Tensor) -> torch.Tensor:
    """float8_e4m3fn values of x / scale (scale broadcasts against x)."""
    return torch.clamp(x.float() / scale, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)


def fp8_channel_quantize(weight: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Per-output-channel FP8 values [out, in] and scales [out, 1] of a [out, in] weight."""
    scale = fp8_scale(weight.detach().float().abs().amax(dim=1, keepdim=True))
    return to_fp8(weight.detach(), scale), scale


def quantize_per_token_fp8(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Dynamic per-token FP8 values and their scales [..., 1], as the serving kernel computes them."""
    scale = fp8_scale(x.float().abs().amax(dim=-1, keepdim=True))
    return to_fp8(x, scale), scale


def fake_quantize_per_token_fp8(x: torch.Tensor) -> torch.Tensor:
    values, scale = quantize_per_token_fp8(x)
    return (values.float() * scale).to(x.dtype)
