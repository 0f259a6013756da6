"""KV smoothing math: per-channel factors from the observed key range, folded into the Q and K producers so
that Q·Kᵀ is unchanged while K's channels become flat (docs/algorithms.md, "KV smoothing").

RoPE rotates channel d together with channel d + D/2 (rotate-half layout), so both get the same factor
(the larger of their two maxima) and the rotation commutes with the scaling. K is divided and Q multiplied
by the factor: each query head uses the factor of its KV head (GQA groups are contiguous). When the model
normalizes Q and K per head (`q_norm`/`k_norm`, Qwen3) the projections' scale would be normalized away, so
the factor is folded into the norm weights instead and must be shared by all KV heads (their maximum).
"""

from __future__ import annotations

import torch
from torch import nn

from modelslim_core.attention.sites import AttentionSite
from modelslim_core.errors import QuantizationError


def rope_paired(abs_max: torch.Tensor) -> torch.Tensor:
    """`[..., D]` -> the max of channels d and d + D/2, written to both."""
    half = abs_max.shape[-1] // 2
    paired = torch.maximum(abs_max[..., :half], abs_max[..., half:])
    return torch.cat([paired, paired], dim=-1)


def smoothing_factors(abs_max: torch.Tensor, smooth_factor: float) -> torch.Tensor:
    """(paired max|K|)^f; a channel that was always zero keeps factor 1 (the reference divides by zero)."""
    paired = rope_paired(abs_max.float())
    factors = paired.pow(smooth_factor)
    return torch.where(paired > 0, factors, torch.ones_like(factors))


def uses_norm_fusion(site: AttentionSite) -> bool:
    return isinstance(site.child("q_norm"), nn.Module) and isinstance(site.child("k_norm"), nn.Module)


def _scale_rows(linear: nn.Module, factors: torch.Tensor, name: str) -> None:
    if not isinstance(linear, nn.Linear):
        raise QuantizationError(
            f"{name} is already {type(linear).__name__}, so kv_smooth cannot rescale its weights.",
            "put kv_smooth before the linear_quant that quantizes the attention projections in spec.process.",
        )
    weight = linear.weight.data
    linear.weight.data = (weight.float() * factors[:, None].to(weight.device)).to(weight.dtype)
    if linear.bias is not None:
        bias = linear.bias.data
        linear.bias.data = (bias.float() * factors.to(bias.device)).to(bias.dtype)


def _scale_norm(norm: nn.Module, factors: torch.Tensor, name: str) -> None:
    weight = getattr(norm, "weight", None)
    if weight is None or weight.shape != factors.shape:
        raise QuantizationError(f"{name} has no per-channel weight of size {factors.numel()} to fold kv_smooth into.",
                                "exclude this attention module from kv_smooth.")
    weight.data = (weight.data.float() * factors.to(weight.device)).to(weight.dtype)


def apply_kv_smoothing(site: AttentionSite, key_abs_max: torch.Tensor, smooth_factor: float) -> torch.Tensor:
    """Fold the factors of `key_abs_max` (`[H_kv·D]`) into the site; returns the factors used (`[H_kv, D]` or `[D]`)."""
    per_head = key_abs_max.reshape(site.num_kv_heads, site.head_dim)
    if uses_norm_fusion(site):
        factors = smoothing_factors(per_head.amax(dim=0), smooth_factor)
        _scale_norm(site.child("k_norm"), 1.0 / factors, f"{site.name}.k_norm")
        _scale_norm(site.child("q_norm"), factors, f"{site.name}.q_norm")
        return factors
    factors = smoothing_factors(per_head, smooth_factor)
    _scale_rows(site.child("k_proj"), (1.0 / factors).reshape(-1), f"{site.name}.k_proj")
    _scale_rows(site.child("q_proj"), factors.repeat_interleave(site.group_size, dim=0).reshape(-1), f"{site.name}.q_proj")
    return factors
