"""Routed experts a checkpoint stores stacked over experts, read back into the per-expert modules.

Some releases keep each MoE layer's routed experts as one tensor per projection with the expert index first
(Step-3.7: `moe.gate_proj.weight` / `moe.up_proj.weight` `[E, I, H]`, `moe.down_proj.weight` `[E, H, I]`), and the
quantizer writes them back that way when they stay float. The runtime's skeleton holds one small MLP per expert
(models/moe.py), so each stacked tensor is split here: expert e's `gate_proj` / `up_proj` / `down_proj` weight is
row e of the stacked tensor. Which names are stacked is read from transformers' own load-time rules for the model
(a renaming to `experts.down_proj`, a converter of unstarred sources into `experts.gate_up_proj`), so the saver's
naming is checked independently of the quantizer's adapter.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from typing import Any

from torch import nn

#: Fused experts parameter -> the per-expert leaves of its sources, in order.
_LEAVES = {"gate_up_proj": ("gate_proj", "up_proj"), "down_proj": ("down_proj",)}
_EXPERT_LEAF = re.compile(r"^(?P<experts>.+\.experts)\.(?P<index>\d+)\.(?P<leaf>gate_proj|up_proj|down_proj)\.weight$")


def _experts_held(model: nn.Module) -> dict[str, int]:
    """Per-expert experts module path -> its number of experts."""
    counts: dict[str, int] = {}
    for name, _ in model.named_parameters(remove_duplicate=False):
        match = _EXPERT_LEAF.match(name)
        if match:
            counts[match["experts"]] = max(counts.get(match["experts"], 0), int(match["index"]) + 1)
    return counts


def _stacked_sources(model: nn.Module) -> list[tuple[str, str]]:
    """(source pattern, per-expert leaf) of converters that fuse stacked (unstarred) sources into experts."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter

    found = []
    for rule in get_model_conversion_mapping(model):
        if not isinstance(rule, WeightConverter) or len(rule.target_patterns) != 1:
            continue
        target = rule.target_patterns[0].replace("\\", "")
        leaves = _LEAVES.get(target.rpartition(".")[2]) if target.rpartition(".")[0].endswith("experts") else None
        if leaves is None or len(leaves) != len(rule.source_patterns):
            continue
        found += [(source, leaf) for source, leaf in zip(rule.source_patterns, leaves) if "*" not in source]
    return found


def stacked_expert_parts(model: nn.Module) -> Callable[[str], list[tuple[str, Callable[[Any], Any]]]]:
    """For a saved (already renamed) tensor holding a layer's experts stacked: each expert's weight name with the
    function taking it from the stacked tensor; [] for every other tensor (checkpoint.split's protocol)."""
    experts = _experts_held(model)
    if not experts:
        return lambda name: []
    sources = _stacked_sources(model)
    held = {name for name, _ in model.named_parameters(remove_duplicate=False)}

    def rows(module: str, leaf: str) -> list[tuple[str, Callable[[Any], Any]]]:
        return [(f"{module}.{e}.{leaf}.weight", lambda stacked, e=e: stacked[e]) for e in range(experts[module])]

    def parts_of(name: str) -> list[tuple[str, Callable[[Any], Any]]]:
        if name in held:
            return []
        module, _, leaf = name.rpartition(".")
        if leaf == "down_proj" and module in experts:  # renamed on load to the fused `experts.down_proj`
            return rows(module, "down_proj")
        for source, expert_leaf in sources:
            found = re.search(source, name)
            if found is not None:
                module = name[:found.start()].rstrip(".") + ".mlp.experts"
                if module in experts:
                    return rows(module, expert_leaf)
        return []

    return parts_of
