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
