"""Seeing (and changing) the query/key/value states an attention module hands to its attention kernel.

transformers (5.x) attention modules compute post-RoPE Q `[B, H, S, D]` and K/V `[B, H_kv, S, D]` (before any
GQA repeat) and pass them to the function registered for `config._attn_implementation` in
`ALL_ATTENTION_FUNCTIONS`, together with the module itself. That call is where a serving engine's KV cache
receives K/V and its fused attention kernel receives Q/K/V, so it is where KV-cache and FA3 quantization act.

A *tap* is a function `(query, key, value) -> (query, key, value)` attached to one attention module. While any
module sharing a config has a tap, that config's attention implementation is switched to a registered
wrapper of the same implementation (`modelslim_tap:<impl>`, with the same mask function), which runs the
module's taps in attachment order and then the original kernel. Modules without taps are unaffected, and the
switch is undone when the last tap of that config is removed. Nothing in transformers is edited.
Diffusers attention modules are tapped at their kernel call instead (`diffusers_taps.py`).
"""

from __future__ import annotations

import sys
import weakref
from collections.abc import Callable
from typing import Any

import torch
from torch import nn

from modelslim_core.attention.diffusers_taps import TAPS_ATTR, add_diffusers_tap, is_diffusers_attention, remove_diffusers_tap
from modelslim_core.errors import ModelError

Tap = Callable[[torch.Tensor, torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor, torch.Tensor]]

PREFIX = "modelslim_tap:"

#: id(config) -> [weak reference to the config, original implementation, number of tapped modules using it].
#: Weak, so a model loaded with permanent taps (the reference runtime) can still be freed.
_SWITCHED: dict[int, list[Any]] = {}


def _entry(config: Any) -> list[Any] | None:
    entry = _SWITCHED.get(id(config))
    if entry is not None and entry[0]() is not config:  # a freed config's id was reused
        del _SWITCHED[id(config)]
        return None
    return entry


def _original_kernel(module: nn.Module, implementation: str) -> Callable[..., Any]:
    from transformers.modeling_utils import ALL_ATTENTION_FUNCTIONS

    if implementation not in (None, "eager") and implementation in ALL_ATTENTION_FUNCTIONS:
        return ALL_ATTENTION_FUNCTIONS[implementation]
    eager = getattr(sys.modules.get(type(module).__module__), "eager_attention_forward", None)
    if eager is None:
        raise ModelError(
            f"{type(module).__name__} runs eager attention but its modeling file has no eager_attention_forward.",
            "load the model with attn_implementation='sdpa', or use an adapter for this architecture.",
        )
    return eager


def _tapped_name(implementation: str | None) -> str:
    """Register (once) the wrapper of `implementation` and its mask function; returns the wrapper's name."""
    from transformers.masking_utils import ALL_MASK_ATTENTION_FUNCTIONS, AttentionMaskInterface
    from transformers.modeling_utils import AttentionInterface

    base = implementation or "eager"
    name = PREFIX + base
    if name in AttentionInterface._global_mapping:
        return name

    def tapped_attention(module: nn.Module, query, key, value, attention_mask, **kwargs):
        for tap in list(getattr(module, TAPS_ATTR, {}).values()):
            query, key, value = tap(query, key, value)
        return _original_kernel(module, base)(module, query, key, value, attention_mask, **kwargs)

    AttentionInterface.register(name, tapped_attention)
    if base in ALL_MASK_ATTENTION_FUNCTIONS._global_mapping:
        AttentionMaskInterface.register(name, ALL_MASK_ATTENTION_FUNCTIONS._global_mapping[base])
    return name


def _config_of(module: nn.Module) -> Any:
    config = getattr(module, "config", None)
    if config is None or not hasattr(config, "_attn_implementation"):
        raise ModelError(
            f"{type(module).__name__} has no transformers config, so its attention kernel cannot be observed.",
            "KV-cache, FA3 and KV-smooth processors support transformers attention modules only.",
        )
    return config


def add_tap(module: nn.Module, key: str, tap: Tap) -> None:
    """Attach `tap` to `module` under `key` (replacing an earlier tap with the same key)."""
    if is_diffusers_attention(module):
        add_diffusers_tap(module, key, tap)
        return
    taps: dict[str, Tap] = module.__dict__.setdefault(TAPS_ATTR, {})
    first = key not in taps
    taps[key] = tap
    if not first:
        return
    config = _config_of(module)
    entry = _entry(config)
    if entry is None:
        original = config._attn_implementation
        if isinstance(original, str) and original.startswith(PREFIX):
            original = original[len(PREFIX):]
        entry = _SWITCHED[id(config)] = [weakref.ref(config), original, 0]
        config._attn_implementation = _tapped_name(original)
    entry[2] += 1


def remove_tap(module: nn.Module, key: str) -> None:
    """Detach the tap `key` from `module`; restores the original kernel when no tapped module is left."""
    if is_diffusers_attention(module):
        remove_diffusers_tap(module, key)
        return
    taps: dict[str, Tap] = module.__dict__.get(TAPS_ATTR, {})
    if taps.pop(key, None) is None:
        return
    config = _config_of(module)
    entry = _entry(config)
    if entry is None:
        return
    entry[2] -= 1
    if entry[2] <= 0:
        config._attn_implementation = entry[1]
        del _SWITCHED[id(config)]


def has_tap(module: nn.Module, key: str) -> bool:
    return key in module.__dict__.get(TAPS_ATTR, {})
