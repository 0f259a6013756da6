"""What one calibration sample carries through the VLM unit pipeline."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from modelslim_core.runtime.unit import UnitInput


@dataclass
class VlmSampleInput(UnitInput):
    """The inputs of the next decoder layer (args/kwargs, as the model's own forward built them: media features
    scattered into the text embeddings, multimodal position ids) plus the sample's encoder calls.

    `tower_calls` holds every call of each encoder unit (an image and a video are two calls of one vision
    tower), so the encoders can be calibrated on exactly what the model fed them. `extras` keeps what the
    language model adds between layers (Qwen3-VL's DeepStack features and their positions); `layer` is the
    index of the decoder layer `args`/`kwargs` feed.
    """

    tower_calls: dict[str, list[UnitInput]] = field(default_factory=dict)
    extras: dict[str, Any] = field(default_factory=dict)
    layer: int = 0


def moved(item: VlmSampleInput, device) -> VlmSampleInput:
    """`item` with every tensor it holds (layer inputs, tower calls, extras) on `device`."""
    from modelslim_runners.placement import move

    return VlmSampleInput(
        args=move(item.args, device),
        kwargs=move(item.kwargs, device),
        tower_calls={path: [UnitInput(move(c.args, device), move(c.kwargs, device)) for c in calls]
                     for path, calls in item.tower_calls.items()},
        extras=move(item.extras, device),
        layer=item.layer,
    )
