"""Per-expert weights sliced out of MoE checkpoints that store experts fused, for lazy layer-wise loading."""

from __future__ import annotations

import re
from typing import Any

import torch

_EXPERT_KEY = re.compile(r"^(?P<prefix>.+\.experts)\.(?P<expert>\d+)\.(?P<proj>gate_proj|up_proj|down_proj)\.weight$")


class FusedExpertTensors:
    """Per-expert weights sliced out of fused checkpoint tensors, for lazy layer-wise loading.

    Most hub MoE checkpoints store every expert separately and need nothing here. Some (e.g. Qwen3-VL-MoE)
    store `<prefix>.experts.gate_up_proj` and `<prefix>.experts.down_proj` fused, as `[E, 2I, H]` / `[E, H, I]`
    or transposed `[E, H, 2I]` / `[E, I, H]`. The orientation is read from the two shapes together (gate_up's
    second dim is twice down's last in the plain layout); a layout the shapes cannot decide is not offered,
    and the run then loads the whole model instead. The last fused pair read is cached, since a unit's
    experts are read one after the other.
    """

    def __init__(self, source: Any):
        self.source = source
        self._cached: tuple[str, torch.Tensor, torch.Tensor] | None = None
        self._orientations: dict[str, bool | None] = {}

    def _fused_keys(self, prefix: str) -> tuple[str, str] | None:
        keys = (f"{prefix}.gate_up_proj", f"{prefix}.down_proj")
        return keys if all(key in self.source for key in keys) else None

    def _orientation(self, prefix: str) -> bool | None:
        """True: stored transposed ([E, in, out]); False: [E, out, in]; None: cannot tell."""
        if prefix not in self._orientations:
            self._orientations[prefix] = self._read_orientation(prefix)
        return self._orientations[prefix]

    def _read_orientation(self, prefix: str) -> bool | None:
        gate_up, down = (self.source.shape(key) for key in self._fused_keys(prefix))
        plain = len(gate_up) == 3 and len(down) == 3 and gate_up[1] == 2 * down[2] and gate_up[2] == down[1]
        transposed = len(gate_up) == 3 and len(down) == 3 and gate_up[2] == 2 * down[1] and gate_up[1] == down[2]
        return None if plain == transposed else transposed

    def provides(self, name: str) -> bool:
        match = _EXPERT_KEY.match(name)
        return bool(match and self._fused_keys(match["prefix"]) and self._orientation(match["prefix"]) is not None)

    def read(self, name: str) -> torch.Tensor:
        match = _EXPERT_KEY.match(name)
        prefix, expert, proj = match["prefix"], int(match["expert"]), match["proj"]
        if self._cached is None or self._cached[0] != prefix:
            gate_up_key, down_key = self._fused_keys(prefix)
            self._cached = (prefix, self.source.read(gate_up_key), self.source.read(down_key))
        _, gate_up, down = self._cached
        if self._orientation(prefix):
            gate_up, down = gate_up.transpose(1, 2), down.transpose(1, 2)
        inter = gate_up.shape[1] // 2
        if proj == "down_proj":
            weight = down[expert]
        else:
            weight = gate_up[expert, :inter] if proj == "gate_proj" else gate_up[expert, inter:]
        return weight.contiguous().clone()
