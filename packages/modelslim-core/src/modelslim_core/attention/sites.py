"""Attention modules of a unit and the head geometry the KV-cache, FA3 and KV-smooth processors depend on.

An attention site is a module whose class name contains "attention"/"attn" and which owns `q_proj`,
`k_proj` and `v_proj` linears (the transformers layout of Llama/Qwen2/Qwen3 and most dense decoders). The
head geometry comes from the module's config, because the projections may already be replaced by
quantized layers whose shapes no longer tell it.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import nn

from modelslim_core.errors import ModelError

PROJECTIONS = ("q_proj", "k_proj", "v_proj")


@dataclass
class AttentionSite:
    """One attention module: its full name, the module, and its head layout."""

    name: str
    module: nn.Module
    num_heads: int
    num_kv_heads: int
    head_dim: int

    @property
    def group_size(self) -> int:
        """Query heads sharing one KV head (GQA); query heads of a group are contiguous."""
        return self.num_heads // self.num_kv_heads

    @property
    def kv_channels(self) -> int:
        return self.num_kv_heads * self.head_dim

    def child(self, attr: str) -> nn.Module | None:
        return getattr(self.module, attr, None)


def is_attention_module(module: nn.Module) -> bool:
    kind = type(module).__name__.lower()
    return ("attention" in kind or "attn" in kind) and all(hasattr(module, p) for p in PROJECTIONS)


def _geometry(name: str, module: nn.Module) -> tuple[int, int, int]:
    config = getattr(module, "config", None)
    heads = getattr(config, "num_attention_heads", None)
    kv_heads = getattr(config, "num_key_value_heads", None) or heads
    head_dim = getattr(module, "head_dim", None) or getattr(config, "head_dim", None)
    if head_dim is None and heads:
        head_dim = getattr(config, "hidden_size", 0) // heads
    if not heads or not kv_heads or not head_dim or heads % kv_heads:
        raise ModelError(
            f"{name} ({type(module).__name__}) does not declare a usable head layout (num_attention_heads="
            f"{heads}, num_key_value_heads={kv_heads}, head_dim={head_dim}).",
            "KV-cache, FA3 and KV-smooth quantization need a config with num_attention_heads, num_key_value_heads "
            "(dividing it) and head_dim; use a model adapter that provides them.",
        )
    return int(heads), int(kv_heads), int(head_dim)


def find_attention_sites(root: nn.Module, prefix: str) -> list[AttentionSite]:
    """Every attention module under `root`, named `prefix.<path>`, outermost only, in `named_modules` order."""
    sites: list[AttentionSite] = []
    for path, module in root.named_modules():
        if not is_attention_module(module):
            continue
        name = ".".join(part for part in (prefix, path) if part)
        if any(name.startswith(site.name + ".") for site in sites):
            continue
        sites.append(AttentionSite(name, module, *_geometry(name, module)))
    return sites
