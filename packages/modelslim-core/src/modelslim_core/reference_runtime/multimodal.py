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
OMNI_THINKERS = {"qwen2_5_omni": "Qwen2_5OmniThinkerForConditionalGeneration"}


def omni_thinker(config: Any) -> tuple[type[nn.Module], Any] | None:
    """(thinker class, thinker config) for a full Omni release; None for every other model."""
    import transformers

    thinker = OMNI_THINKERS.get(getattr(config, "model_type", ""))
    if thinker is None:
        return None
    return getattr(transformers, thinker), config.thinker_config


def saved_to_module_name(model: nn.Module) -> Callable[[str], str]:
    """Maps a checkpoint tensor name to the module path of `model` (identity when transformers has no rules)."""
    from transformers.conversion_mapping import get_model_conversion_mapping
    from transformers.core_model_loading import WeightRenaming, rename_source_key

    renamings = [rule for rule in get_model_conversion_mapping(model) if isinstance(rule, WeightRenaming)]
    if not renamings:
        return lambda name: name
    meta = {name: None for name, _ in model.named_parameters(remove_duplicate=False)}
    prefix = getattr(model, "base_model_prefix", None)
    return lambda name: rename_source_key(name, renamings, [], prefix, meta)[0]
