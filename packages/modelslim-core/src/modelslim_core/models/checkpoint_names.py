"""The names a checkpoint on disk gives the tensors of a loaded model.

transformers renames some families' tensors when it loads them (MiniMax-M2: `block_sparse_moe.experts.E.w1`
becomes `mlp.experts.gate_up_proj`, fused over experts) and renames them back when it saves. Configs written
for the reference tool and the serving engines' loaders use the checkpoint's names, so include/exclude
patterns must match them and a quantized checkpoint must be written with them. This module inverts
transformers' own load-time rules (its checkpoint conversion mapping for the model's class or model_type),
the same rules `save_pretrained` inverts, so no family needs a hand-written table:

- renamings are reversed and applied in reverse order;
- the per-expert linears ModelSlim splits fused experts into (`<experts>.E.gate_proj|up_proj|down_proj`,
  models/moe.py) get the per-expert source names of the converter that fused them (`gate_up_proj` is the
  concatenation of its first and second source, in that order).

Quantization tensors (`weight_scale`, `deq_scale`, ...) are named beside their module's weight.

The forward direction (`checkpoint_to_module`: a saved name -> the loaded model's parameter path, used by the
reference runtime to read such a checkpoint back) applies the rules as transformers does, plus the per-expert
leaf names of its fusing converters (`w1` -> `gate_proj`).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from typing import Any

from torch import nn

_EXPERT = re.compile(r"^(?P<prefix>.+\.experts)\.(?P<expert>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)$")
#: Per-expert projection -> (fused parameter, position among the converter's sources).
_FUSED_SLOT = {"gate_proj": ("gate_up_proj", 0), "up_proj": ("gate_up_proj", 1), "down_proj": ("down_proj", 0)}
_REGEX_CHARS = re.compile(r"[\^$()\[\]|+?{}]")


def _literal(pattern: str) -> str | None:
    """A transformers pattern as plain text (`\\.experts.*.w1.weight` -> `.experts.*.w1.weight`); None when it
    is a real regular expression."""
    text = pattern.replace("\\.", ".")
    return None if "\\" in text or _REGEX_CHARS.search(text) else text


class CheckpointNames:
    """Module path / tensor name of the loaded model -> the name the checkpoint on disk uses."""

    def __init__(self, reverse_renamings: list[Any], expert_sources: list[tuple[str, list[str]]]):
        self._renamings = reverse_renamings
        #: (fused target text, per-expert source texts with `*` for the expert index).
        self._expert_sources = expert_sources
        self._modules: dict[str, str] = {}  # every filter asks for every layer: computed once per module

    @classmethod
    def for_config(cls, config_json: dict[str, Any]) -> "CheckpointNames":
        """The rules transformers applies when loading a model of this config.json (class name first)."""
        try:
            from transformers.conversion_mapping import get_checkpoint_conversion_mapping
            from transformers.core_model_loading import PrefixChange, WeightConverter, WeightRenaming
        except ImportError:  # a transformers without conversion mappings renames nothing
            return cls([], [])
        architectures = config_json.get("architectures") or [None]
        conversions = None
        for key in (architectures[0], config_json.get("model_type")):
            if isinstance(key, str) and conversions is None:
                conversions = get_checkpoint_conversion_mapping(key)
        conversions = conversions or []
        # A prefix change depends on how the checkpoint was saved (base model or head); the VLM adapters, the only
        # families whose checkpoints carry one, map prefixes themselves.
        renamings = []
        for rule in reversed(conversions):
            if isinstance(rule, WeightRenaming) and not isinstance(rule, PrefixChange):
                try:
                    renamings.append(rule.reverse_transform())
                except ValueError:  # a rule transformers itself cannot invert is left out (names stay as loaded)
                    continue
        experts = []
        for rule in conversions:
            if not isinstance(rule, WeightConverter) or len(rule.target_patterns) != 1:
                continue
            target = _literal(getattr(rule, "_original_target_patterns", rule.target_patterns)[0])
            sources = [_literal(pattern) for pattern in getattr(rule, "_original_source_patterns", rule.source_patterns)]
            if target and all(source and source.count("*") == 1 for source in sources):
                experts.append((target, sources))
        return cls(renamings, experts)

    @property
    def renames(self) -> bool:
        return bool(self._renamings or self._expert_sources)

    def _rename(self, key: str) -> str:
        for rule in self._renamings:
            key, _ = rule.rename_source_key(key)
        return key

    def _expert_key(self, module: str) -> str | None:
        """`<experts>.E.gate_proj` -> the checkpoint's per-expert weight key, before renamings."""
        match = _EXPERT.match(module)
        if match is None:
            return None
        fused_leaf, slot = _FUSED_SLOT[match["proj"]]
        fused = f"{match['prefix']}.{fused_leaf}"
        for target, sources in self._expert_sources:
            if fused.endswith(target) and slot < len(sources) and (fused_leaf == "gate_up_proj") == (len(sources) == 2):
                source = sources[slot].replace("*", match["expert"])
                return fused[: len(fused) - len(target)] + source
        return None

    def module_name(self, module: str) -> str:
        """The checkpoint's name of a module (the prefix of its tensors there)."""
        if not self.renames:
            return module
        if module not in self._modules:
            renamed = self._rename(self._expert_key(module) or f"{module}.weight")
            self._modules[module] = renamed.removesuffix(".weight") if renamed.endswith(".weight") else module
        return self._modules[module]

    def tensor_name(self, name: str) -> str:
        """The checkpoint's name of a tensor: the full name's own renaming when one applies (parameters a rule
        names exactly), else its module's checkpoint name plus the leaf (quantization tensors, per-expert)."""
        if not self.renames:
            return name
        module, _, leaf = name.rpartition(".")
        if module and _EXPERT.match(module):
            return f"{self.module_name(module)}.{leaf}"
        renamed = self._rename(name)
        if renamed != name or not module:
            return renamed
        return f"{self.module_name(module)}.{leaf}"


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
    modules = {name for name, _ in model.named_modules()}

    def to_module(name: str) -> str:
        renamed = rename_source_key(name, renamings, [])[0] if renamings else name
        renamed = expert_leaf.sub(lambda m: f"{m[1]}{leaves[m[2]]}.", renamed) if expert_leaf else renamed
        # releases that store the base model without its prefix (DeepSeek-V4: `layers.*`, `norm.weight`)
        if prefix and renamed not in meta and renamed.rpartition(".")[0] not in modules:
            prefixed = f"{prefix}.{renamed}"
            if prefixed in meta or prefixed.rpartition(".")[0] in modules:
                return prefixed
        return renamed

    return to_module
