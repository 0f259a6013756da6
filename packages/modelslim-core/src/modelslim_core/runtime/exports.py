"""Extra checkpoint content that a processor attaches to a module which is not a quantized linear.

KV-cache (C8) and FA3 quantization produce tensors and description entries owned by an attention module
(`<attn>.k_proj.kv_cache_scale`, `<attn>.fa_q.scale`, `<attn>.quant_type`, `kv_cache_type: C8`, ...). The
processor attaches them to the module under its own key; savers write whatever is attached when they reach
the module, so the savers need no knowledge of attention quantization and several processors can attach to
the same module without seeing each other.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
from torch import nn

EXPORTS_ATTR = "_modelslim_exports"


@dataclass
class ModuleExports:
    """What one processor adds to the checkpoint for one module.

    `tensors`: (suffix relative to the module, tensor written as-is, description tag), in write order.
    `entries`: description entries that are not tensors (suffix -> string), e.g. `quant_type`.
    `globals`: model-level description keys (e.g. `kv_cache_type: C8`).
    """

    tensors: list[tuple[str, torch.Tensor, str]] = field(default_factory=list)
    entries: dict[str, str] = field(default_factory=dict)
    globals: dict[str, str] = field(default_factory=dict)


def attach_exports(module: nn.Module, owner: str, exports: ModuleExports) -> None:
    """Attach (or replace) `owner`'s exports on `module`."""
    module.__dict__.setdefault(EXPORTS_ATTR, {})[owner] = exports


def exports_of(module: nn.Module) -> list[ModuleExports]:
    """Every processor's exports attached to `module`, in attachment order."""
    return list(module.__dict__.get(EXPORTS_ATTR, {}).values())
