"""Multimodal checkpoints in the reference runtime: the Omni thinker, and how saved names map to modules.

Vision-language checkpoints name tensors as their releases do on disk, which can differ from the module
paths of current transformers (Qwen2.5-VL: `visual.*` / `model.layers.*` vs `model.visual.*` /
`model.language_model.*`; the Omni thinker adds `thinker.`). The runtime maps names with transformers' own
load-time renaming rules, not with the quantizer's adapter, so it checks the saver's naming independently.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from torch import nn

#: Full Omni releases: only the thinker (text output) is quantized and served from the checkpoint.
OMNI_THINKERS = {"qwen2_5_omni": "Qwen2_5OmniThinkerForConditionalGeneration",
                 "qwen3_omni_moe": "Qwen3OmniMoeThinkerForConditionalGeneration"}


def omni_thinker(config: Any) -> tuple[type[nn.Module], Any] | None:
    """(thinker class, thinker config) for a full Omni release; None for every other model."""
    import transformers

    thinker = OMNI_THINKERS.get(getattr(config, "model_type", ""))
    if thinker is None:
        return None
    return getattr(transformers, thinker), config.thinker_config


def saved_to_module_name(model: nn.Module) -> Callable[[str], str]:
    """Maps a checkpoint tensor name to the module path of `model` (identity when transformers has no rules):
    transformers' renamings plus the per-expert leaf names of its fusing converters (models/checkpoint_names.py)."""
    from modelslim_core.models.checkpoint_names import checkpoint_to_module

    return checkpoint_to_module(model)


def fused_parts(model: nn.Module) -> Callable[[str], list[tuple[str, Callable[[Any], Any]]]]:
    """For a saved tensor that transformers splits on load (Kimi-K2.5's vision `wqkv` into the query, key and
    value projections, query and key rows permuted for its rotary layout): the parts' parameter names, each with
    the function computing it from the fused tensor. transformers' own converter operations do the work, so the
    runtime checks the saver's fusing independently."""
    import re

    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightConverter

    rules = [rule for rule in get_model_conversion_mapping(model)
             if isinstance(rule, WeightConverter) and len(rule.source_patterns) == 1 and len(rule.target_patterns) > 1]
    if not rules:
        return lambda name: []
    config = getattr(model, "config", None)
    held = {name for name, _ in model.named_parameters(remove_duplicate=False)}

    def split(rule, fused):
        pieces = {rule.source_patterns[0]: [fused]}
        for operation in rule.operations:
            pieces = operation.convert(pieces, source_patterns=rule.source_patterns,
                                       target_patterns=rule.target_patterns, config=config)
        return pieces

    def parts_of(name: str) -> list[tuple[str, Callable[[Any], Any]]]:
        if name in held:  # the model holds it as saved (a module of its own, not a release's fused tensor)
            return []
        for rule in rules:
            source = rule.source_patterns[0]
            if re.search(source, name) is None:
                continue
            return [(re.sub(source, target.replace("\\", ""), name, count=1),
                     lambda fused, rule=rule, target=target: split(rule, fused)[target])
                    for target in rule.target_patterns]
        return []

    return parts_of
