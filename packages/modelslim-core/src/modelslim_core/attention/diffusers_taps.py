"""Taps on diffusers attention modules: the Q/K/V handed to the attention kernel of a diffusion transformer.

A diffusers attention module (Wan, FLUX, HunyuanVideo, Qwen-Image ...) runs an attention *processor* that
projects, normalises and rotary-embeds Q and K and then calls `dispatch_attention_fn(query, key, value)`
with `[B, S, H, D]` tensors: the call a serving engine replaces with its fused (quantized) attention
kernel, so it is where FA3 quantization and the online Q/K rotation act. (Rotating there, after RoPE, keeps
Q·Kᵀ exact; MindIE-SD applies `q_rot`/`k_rot` at the same place.)

While a tapped module runs (a forward pre-hook / hook pair), its taps are the active ones; the processor
module's `dispatch_attention_fn` is wrapped once so that, when taps are active, it hands them Q/K/V as
`[B, H, S, D]` (the layout of transformers taps, so the same tap functions serve both) and passes the
results on to the original function. Modules without taps, and every call outside a tapped module, go
straight to the original function.
"""

from __future__ import annotations

import contextvars
from typing import Any

from torch import nn

from modelslim_core.attention.sites import AttentionSite

TAPS_ATTR = "_modelslim_attention_taps"
_HOOKS_ATTR = "_modelslim_diffusers_tap_hooks"
_WRAPPED_MARK = "_modelslim_tapped_dispatch"
_ACTIVE: contextvars.ContextVar[tuple[Any, ...]] = contextvars.ContextVar("modelslim_diffusers_taps", default=())


def is_diffusers_attention(module: nn.Module) -> bool:
    """A diffusers attention module: it runs a processor and has the to_q/to_k/to_v projections' owner API."""
    return hasattr(module, "processor") and hasattr(module, "set_processor") and hasattr(module, "heads")


def find_diffusers_attention_sites(root: nn.Module, prefix: str) -> list[AttentionSite]:
    """Every diffusers attention module under `root` (outermost), named `prefix.<path>`, with its heads."""
    sites: list[AttentionSite] = []
    for path, module in root.named_modules():
        if not is_diffusers_attention(module):
            continue
        name = ".".join(part for part in (prefix, path) if part)
        heads = int(module.heads)
        head_dim = int(getattr(module, "head_dim", 0) or module.inner_dim // heads)
        kv_heads = int(getattr(module, "kv_heads", None) or heads)
        sites.append(AttentionSite(name, module, heads, kv_heads, head_dim))
    return sites


def _tapped_dispatch(original):
    def dispatch(query, key, value, *args, **kwargs):
        for tap in _ACTIVE.get():
            q, k, v = tap(query.transpose(1, 2), key.transpose(1, 2), value.transpose(1, 2))
            query, key, value = q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2)
        return original(query, key, value, *args, **kwargs)

    setattr(dispatch, _WRAPPED_MARK, original)
    return dispatch


def _wrap_dispatch(module: nn.Module) -> None:
    """Wrap `dispatch_attention_fn` where the module's processor looks it up (once per processor module)."""
    namespace = type(module.processor).__call__.__globals__
    current = namespace.get("dispatch_attention_fn")
    if current is not None and not hasattr(current, _WRAPPED_MARK):
        namespace["dispatch_attention_fn"] = _tapped_dispatch(current)


def _activate(module: nn.Module, _args: Any) -> None:
    taps = tuple(module.__dict__.get(TAPS_ATTR, {}).values())
    module.__dict__.setdefault("_modelslim_tap_tokens", []).append(_ACTIVE.set(taps))


def _deactivate(module: nn.Module, _args: Any, _output: Any) -> None:
    _ACTIVE.reset(module.__dict__["_modelslim_tap_tokens"].pop())


def add_diffusers_tap(module: nn.Module, key: str, tap) -> None:
    taps = module.__dict__.setdefault(TAPS_ATTR, {})
    taps[key] = tap
    if _HOOKS_ATTR not in module.__dict__:
        _wrap_dispatch(module)
        module.__dict__[_HOOKS_ATTR] = (module.register_forward_pre_hook(_activate),
                                        module.register_forward_hook(_deactivate, always_call=True))


def remove_diffusers_tap(module: nn.Module, key: str) -> None:
    taps = module.__dict__.get(TAPS_ATTR, {})
    taps.pop(key, None)
    if not taps and _HOOKS_ATTR in module.__dict__:
        for handle in module.__dict__.pop(_HOOKS_ATTR):
            handle.remove()
