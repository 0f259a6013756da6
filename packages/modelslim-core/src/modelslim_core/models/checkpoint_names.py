"""Checkpoint tensor names <-> module paths, for families whose transformers modules are named differently.

Serving engines load a quantized checkpoint by the names its float release uses (vLLM-Ascend's MiniMax-M2
reads `block_sparse_moe.experts.<e>.w1`), while transformers renames at load time (`.block_sparse_moe.` ->
`.mlp.`, and fuses `w1`/`w3`/`w2` into `gate_up_proj`/`down_proj`, which we split back into per-expert
`gate_proj`/`up_proj`/`down_proj`). The forward direction (checkpoint -> module) follows transformers' own
rules: its renamings, then the per-expert leaf names its fusing converters read. The reverse direction is not
derived from the rules (regexes do not invert): it is read off the source checkpoint's own keys, so saved
names are the release's names by construction.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable

from torch import nn

#: The fused parameters our per-expert split turns back into (fused target -> leaf names, in source order).
_FUSED_TARGETS = {"experts.gate_up_proj": ("gate_proj", "up_proj"), "experts.down_proj": ("down_proj",)}
_EXPERT_SOURCE = re.compile(r"\.experts\.\*\.(?P<leaf>\w+)\.weight$")


def expert_leaf_renames(converters: Iterable) -> dict[str, str]:
    """Checkpoint leaf name of each per-expert linear -> ours (`w1` -> `gate_proj` for Mixtral-style MoE),
    read from transformers' converters that fuse experts; {} when the checkpoint already uses our leaves."""
    leaves: dict[str, str] = {}
    for converter in converters:
        targets = [t.lstrip(".") for t in getattr(converter, "target_patterns", [])]
        ours = _FUSED_TARGETS.get(targets[0]) if len(targets) == 1 else None
        sources = getattr(converter, "source_patterns", [])
        if ours is None or len(sources) != len(ours):
            continue
        for source, leaf in zip(sources, ours):
            match = _EXPERT_SOURCE.search(source)
            if match and match["leaf"] != leaf:
                leaves[match["leaf"]] = leaf
    return leaves


def checkpoint_to_module(model: nn.Module) -> Callable[[str], str]:
    """Maps a checkpoint tensor name to `model`'s parameter path (identity when transformers has no rules)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    rules = get_model_conversion_mapping(model)
    renamings = [rule for rule in rules if isinstance(rule, WeightRenaming)]
    leaves = expert_leaf_renames(rules)
    expert_leaf = re.compile(r"(\.experts\.\d+\.)(" + "|".join(map(re.escape, leaves)) + r")\.") if leaves else None
    if not renamings and expert_leaf is None:
        return lambda name: name
    meta = {name: None for name, _ in model.named_parameters(remove_duplicate=False)}
    prefix = getattr(model, "base_model_prefix", None)

    def to_module(name: str) -> str:
        renamed = rename_source_key(name, renamings, [], prefix, meta)[0] if renamings else name
        return expert_leaf.sub(lambda m: f"{m[1]}{leaves[m[2]]}.", renamed) if expert_leaf else renamed

    return to_module


class CheckpointNames:
    """Module-path prefixes -> the release's prefixes, learned from the source checkpoint's keys.

    A tensor is renamed by its module prefix (everything before the last dot), so the quantized tensors a
    linear gains (`weight_scale`, `weight_offset`, ...) follow its weight to the release's name.
    """

    def __init__(self, model: nn.Module, checkpoint_keys: Iterable[str]):
        to_module = checkpoint_to_module(model)
        self._prefixes: dict[str, str] = {}
        for key in checkpoint_keys:
            module = to_module(key)
            if module == key:
                continue
            module_prefix, _, module_leaf = module.rpartition(".")
            key_prefix, _, key_leaf = key.rpartition(".")
            if module_leaf == key_leaf and module_prefix != key_prefix:
                self._prefixes[module_prefix] = key_prefix

    def __bool__(self) -> bool:
        return bool(self._prefixes)

    def to_checkpoint(self, name: str) -> str:
        prefix, _, leaf = name.rpartition(".")
        saved = self._prefixes.get(prefix)
        return f"{saved}.{leaf}" if saved is not None else name
