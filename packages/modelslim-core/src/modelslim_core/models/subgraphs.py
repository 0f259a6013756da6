"""Smoothing subgraphs: which module produces the activations that which linears consume.

Smoothing moves per-channel magnitude from activations into weights, so it needs pairs of a producer
(a norm, or a linear whose output rows can absorb a scale) and the linears that read the producer's output.
Families declare these pairs as a mapping of names relative to one unit (`SubgraphPattern`); resolving
the mapping against a unit gives `Subgraph`s with the live modules. A family with other module names adds
a mapping, not code. Kinds follow docs/algorithms.md, "Smoothing": `norm-linear`, `linear-linear`, `ov`
(v_proj → o_proj, aware of grouped-query heads) and `up-down` (up_proj → down_proj).
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Any, Literal

from torch import nn

from modelslim_core.runtime.unit import Unit

logger = logging.getLogger(__name__)

SubgraphKind = Literal["norm-linear", "linear-linear", "ov", "up-down"]
SUBGRAPH_KINDS: tuple[str, ...] = ("norm-linear", "linear-linear", "ov", "up-down")
#: Fusion order inside a unit (consumers deeper in the block first), as the reference applies them.
APPLY_ORDER: tuple[str, ...] = ("up-down", "ov", "linear-linear", "norm-linear")
GroupMethod = Literal["mean", "max"]


@dataclass(frozen=True)
class SubgraphPattern:
    """One producer → consumers pair, by module names relative to the unit (e.g. `mlp.up_proj`)."""

    kind: SubgraphKind
    source: str
    targets: tuple[str, ...]
    #: For `ov` with grouped-query attention: how the scales of the query heads sharing one KV head are
    #: combined ("max": max of the statistics before the formula; "mean": mean of the per-channel scales).
    group_method: GroupMethod = "max"


#: Llama / Qwen2 / Qwen3-style decoder layers (and any family whose layers use these names).
DENSE_DECODER_SUBGRAPHS: tuple[SubgraphPattern, ...] = (
    SubgraphPattern("norm-linear", "input_layernorm", ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj")),
    SubgraphPattern("ov", "self_attn.v_proj", ("self_attn.o_proj",)),
    SubgraphPattern("norm-linear", "post_attention_layernorm", ("mlp.gate_proj", "mlp.up_proj")),
    SubgraphPattern("up-down", "mlp.up_proj", ("mlp.down_proj",)),
)


@dataclass
class Subgraph:
    """A resolved pattern: full names, live modules, and the attention geometry an `ov` pair needs."""

    kind: SubgraphKind
    source_name: str
    source: nn.Module
    target_names: tuple[str, ...]
    targets: tuple[nn.Linear, ...]
    group_method: GroupMethod = "max"
    num_heads: int = 1
    num_kv_heads: int = 1

    @property
    def channels(self) -> int:
        """Width of the smoothed activation (the consumers' input features)."""
        return self.targets[0].in_features

    @property
    def head_dim(self) -> int:
        return self.channels // self.num_heads


def attention_heads(config_json: dict[str, Any]) -> tuple[int, int]:
    """(query heads, key/value heads) from a config.json (also inside `text_config`); (1, 1) when absent."""
    for holder in (config_json, config_json.get("text_config") or {}):
        heads = holder.get("num_attention_heads")
        if isinstance(heads, int) and heads > 0:
            kv = holder.get("num_key_value_heads") or heads
            return heads, int(kv)
    return 1, 1


def _lookup(root: nn.Module, path: str) -> nn.Module | None:
    try:
        return root.get_submodule(path)
    except AttributeError:
        return None


def _ov_geometry_fits(source: nn.Module, target: nn.Linear, heads: int, kv_heads: int) -> bool:
    """v_proj rows = kv_heads·head_dim and o_proj columns = heads·head_dim with one head_dim."""
    if heads % kv_heads or target.in_features % heads:
        return False
    return getattr(source, "out_features", None) == kv_heads * (target.in_features // heads)


def resolve_subgraphs(unit: Unit, patterns: tuple[SubgraphPattern, ...], heads: tuple[int, int]) -> list[Subgraph]:
    """The patterns present in `unit` whose consumers are still float linears, in pattern order.

    A pattern naming a module the unit lacks is skipped silently (e.g. a layer without that branch); one
    whose consumers were already replaced (quantized) is skipped with a warning, since smoothing after
    quantization would change the quantized function.
    """
    found: list[Subgraph] = []
    for pattern in patterns:
        source = _lookup(unit.module, pattern.source)
        targets = [_lookup(unit.module, t) for t in pattern.targets]
        if source is None or any(t is None for t in targets):
            continue
        source_name = f"{unit.name}.{pattern.source}"
        if not all(unit.covers(name) for name in (pattern.source, *pattern.targets)):
            continue  # a piece of the unit: a subgraph of another piece is that piece's (runners' *_pieces.py)
        if not all(isinstance(t, nn.Linear) for t in targets):
            logger.warning("Smoothing skips %s: its consumers are no longer float linears (already quantized?).",
                           source_name)
            continue
        if len({t.in_features for t in targets}) != 1:
            logger.warning("Smoothing skips %s: its consumers have different input widths.", source_name)
            continue
        num_heads, num_kv_heads = heads if pattern.kind == "ov" else (1, 1)
        if pattern.kind == "ov" and not _ov_geometry_fits(source, targets[0], num_heads, num_kv_heads):
            logger.warning("Smoothing skips %s: its shapes do not match %d query / %d key-value heads.",
                           source_name, num_heads, num_kv_heads)
            continue
        found.append(Subgraph(
            kind=pattern.kind,
            source_name=source_name,
            source=source,
            target_names=tuple(f"{unit.name}.{t}" for t in pattern.targets),
            targets=tuple(targets),
            group_method=pattern.group_method,
            num_heads=num_heads,
            num_kv_heads=num_kv_heads,
        ))
    return found
