"""Float tensors a release stores fused although the loaded model holds them split.

Kimi-K2.5's vision tower stores each attention's query, key and value projections as one `wqkv` tensor (with
the query and key rows in the release's rotary layout); transformers splits and permutes it on load. A tower
kept float must be written back as the release stores it, or the engine's loader finds none of its names.
An adapter says which module tensors are parts of a fused checkpoint tensor (`fused_checkpoint_part`); the
savers collect the parts of one fused tensor (they are written one module after another, inside one unit)
and write the fused tensor once the last part arrives.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass

import torch


@dataclass(frozen=True)
class FusedPart:
    """One module tensor that is part `slot` of `parts` of the checkpoint tensor `target`."""

    target: str
    slot: int
    parts: int
    #: The checkpoint tensor from all parts, in slot order.
    fuse: Callable[[list[torch.Tensor]], torch.Tensor]


class FusedTensorBuffer:
    """Parts seen so far, per fused target."""

    def __init__(self) -> None:
        self._parts: dict[str, dict[int, torch.Tensor]] = {}

    def add(self, part: FusedPart, tensor: torch.Tensor) -> torch.Tensor | None:
        """The fused tensor once every part of `part.target` has been added; None until then."""
        parts = self._parts.setdefault(part.target, {})
        parts[part.slot] = tensor
        if len(parts) < part.parts:
            return None
        del self._parts[part.target]
        return part.fuse([parts[slot] for slot in range(part.parts)])

    def pending(self) -> list[str]:
        """Targets with some but not all parts (nothing was written for them)."""
        return sorted(self._parts)
