"""Quantizing attention states with static per-channel (KV cache, C8) or per-head (FA3) parameters.

The same functions run at calibration (to feed the next unit states that went through the quantizer) and in
the reference runtime (from the saved tensors), so both compute exactly what the checkpoint describes.
Integer parameters follow the shared affine convention (`quant/int_affine.py`); FP8 scales map the range's
absolute maximum to 448.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from modelslim_core.quant.fp8 import FP8_MAX, fake_quantize_per_token_fp8, fp8_scale
from modelslim_core.quant.int_affine import compute_qparams, fake_quantize, fake_quantize_per_token_sym
from modelslim_core.quant.mx import MX_FORMATS, mx_fake_quantize


@dataclass
class StateParams:
    """Scale and offset of one attention state, broadcastable to `[B, H, S, D]` by `for_states`."""

    dtype: str  # "int8" or "fp8_e4m3"
    scale: torch.Tensor
    offset: torch.Tensor


def channel_params(min_val: torch.Tensor, max_val: torch.Tensor, symmetric: bool) -> StateParams:
    """int8 parameters per channel `[H·D]` (KV cache)."""
    scale, offset = compute_qparams(min_val, max_val, 8, symmetric)
    return StateParams("int8", scale, offset)


def head_params(min_val: torch.Tensor, max_val: torch.Tensor, dtype: str) -> StateParams:
    """Symmetric parameters per head `[H, 1]` (FA3): int8 (max|x|/127) or fp8_e4m3 (max|x|/448)."""
    if dtype == "int8":
        scale, offset = compute_qparams(min_val, max_val, 8, True)
    else:
        scale = fp8_scale(torch.maximum(min_val.abs(), max_val.abs()))
        offset = torch.zeros_like(scale)
    return StateParams(dtype, scale.reshape(-1, 1), offset.reshape(-1, 1))


def _broadcast(values: torch.Tensor, states: torch.Tensor) -> torch.Tensor:
    """`[H·D]` or `[H, 1]` parameters -> `[1, H, 1, D|1]` on the states' device."""
    heads = states.shape[1]
    return values.float().to(states.device).reshape(1, heads, 1, -1)


def fake_quantize_states(states: torch.Tensor, params: StateParams) -> torch.Tensor:
    """States rounded onto the static grid of `params`, returned in the states' dtype."""
    scale, offset = _broadcast(params.scale, states), _broadcast(params.offset, states)
    if params.dtype == "int8":
        return fake_quantize(states, scale, offset, 8)
    values = torch.clamp(states.float() / scale, -FP8_MAX, FP8_MAX).to(torch.float8_e4m3fn)
    return (values.float() * scale).to(states.dtype)


def fake_quantize_states_per_token(states: torch.Tensor, dtype: str, letter: str = "Q") -> torch.Tensor:
    """Dynamic quantization of `[B, H, S, D]` states as a serving kernel does it: int8/fp8 symmetric per token
    of each head (over head_dim); MX per block of 32 along head_dim for Q and K and along the sequence for V
    (the value operand of the P·V product is blocked along its reduction axis)."""
    if dtype in MX_FORMATS:
        if letter == "V":
            return mx_fake_quantize(states.transpose(-1, -2), MX_FORMATS[dtype]).transpose(-1, -2)
        return mx_fake_quantize(states, MX_FORMATS[dtype])
    if dtype == "int8":
        return fake_quantize_per_token_sym(states, 8)
    return fake_quantize_per_token_fp8(states)


def kv_cache_tap(key_params: StateParams, value_params: StateParams):
    """A tap quantizing K and V as an int8 cache with static per-channel parameters does."""

    def quantize_cache(query, key, value):
        return query, fake_quantize_states(key, key_params), fake_quantize_states(value, value_params)

    return quantize_cache


#: Per FA3 branch letter (Q, K, V): the dtype and static parameters, or None for dynamic per-token quantization.
FABranches = dict[str, tuple[str, "StateParams | None"]]


def fa_tap(branches: FABranches):
    """A tap quantizing the fused-attention inputs per branch (branches not listed stay as they are)."""

    def quantize(letter: str, states: torch.Tensor) -> torch.Tensor:
        if letter not in branches:
            return states
        dtype, params = branches[letter]
        if params is None:
            return fake_quantize_states_per_token(states, dtype, letter)
        return fake_quantize_states(states, params)

    def quantize_inputs(query, key, value):
        return quantize("Q", query), quantize("K", key), quantize("V", value)

    return quantize_inputs
