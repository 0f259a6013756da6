"""What a rotation hands to the saver through the run context, and the checkpoint entries it becomes.

Processors finish before the saver commits, and savers must not know processors, so QuaRot records its
checkpoint extras in `context.state[STATE_KEY]` (plain tensors and lists: it survives a resume):
- `global_rotation`: the hidden-size rotation applied to the embeddings → `optional/quarot.safetensors`
  (key `global_rotation`, float32) and the description's `optional.quarot.rotation_map.global_rotation`;
- `online`: per linear, the tensors of its online input rotation (written next to the weights, with no
  description tag) → the description's `metadata.quarot` {max_tp_size, heads_rotation.layers,
  kronecker_rotation.layers};
- `untied`: the LM head was untied from the embeddings (they now differ), so the saved config.json must say
  `tie_word_embeddings: false` or an engine would tie them again.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch
from safetensors.torch import save_file

from modelslim_core.formats.tags import QUAROT, QUAROT_ONLINE
from modelslim_core.rotation.online import HEADS_SUFFIX, KRONECKER_M_SUFFIX

STATE_KEY = "rotation.export"
#: The "types" a rotation with checkpoint extras produces (registered with the other tags in formats/tags.py),
#: so a saver or engine that cannot take them is refused up front: the global rotation file, and the online
#: rotation matrices an `online: true` run adds.
ROTATION_EXTRAS = QUAROT
ONLINE_ROTATIONS = QUAROT_ONLINE
OPTIONAL_FILE = "optional/quarot.safetensors"
GLOBAL_ROTATION_KEY = "global_rotation"


def _record(state: dict[str, Any]) -> dict[str, Any]:
    return state.setdefault(STATE_KEY, {"global_rotation": None, "online": {}, "max_tp_size": None, "untied": False})


def record_global_rotation(state: dict[str, Any], rotation: torch.Tensor) -> None:
    _record(state)["global_rotation"] = rotation.float().contiguous()


def record_online(state: dict[str, Any], linear_name: str, tensors: dict[str, torch.Tensor], max_tp_size: int) -> None:
    record = _record(state)
    record["online"][linear_name] = tensors
    record["max_tp_size"] = max_tp_size


def record_untied(state: dict[str, Any]) -> None:
    _record(state)["untied"] = True


def recorded(state: dict[str, Any]) -> dict[str, Any] | None:
    return state.get(STATE_KEY)


def online_tensors(record: dict[str, Any]) -> dict[str, torch.Tensor]:
    """`<linear>.<suffix>` → tensor, for every online rotation."""
    return {f"{linear}.{suffix}": t for linear, tensors in record["online"].items() for suffix, t in tensors.items()}


def description_metadata(record: dict[str, Any]) -> dict[str, Any]:
    """`metadata` of the description: `{}` without online rotations."""
    if not record["online"]:
        return {}
    heads = [name for name, tensors in record["online"].items() if HEADS_SUFFIX in tensors]
    kronecker = [name for name, tensors in record["online"].items() if KRONECKER_M_SUFFIX in tensors]
    return {"quarot": {"max_tp_size": record["max_tp_size"], "heads_rotation": {"layers": heads},
                       "kronecker_rotation": {"layers": kronecker}}}


def write_optional(record: dict[str, Any], save_path: Path) -> dict[str, Any]:
    """Write `optional/quarot.safetensors` when a global rotation was recorded; returns the description's
    `optional` entry (`{}` otherwise). The file sits in a sub-directory so engines that load every top-level
    *.safetensors never mistake it for weights."""
    if record["global_rotation"] is None:
        return {}
    target = Path(save_path) / OPTIONAL_FILE
    target.parent.mkdir(parents=True, exist_ok=True)
    save_file({GLOBAL_ROTATION_KEY: record["global_rotation"]}, str(target))
    return {"quarot": {"rotation_map": {GLOBAL_ROTATION_KEY: OPTIONAL_FILE}}}
