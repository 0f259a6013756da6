"""Data-parallel data-free runs: a unit's pieces split across the ranks.

A data-free stage streams a unit linear by linear (pieces.py). With several ranks, each linear piece belongs
to one rank, round robin (starting at a rank that moves with the unit index, so ranks share the work evenly
whatever the number of linears per unit): only its owner loads it from the checkpoint, quantizes it (alone,
`working_alone`: no collective, the same computation as one process) and sends the quantized module to
rank 0, which installs it in its skeleton and hands it to the savers. The pieces between linears (norms, a
router, containers: small) are rank 0's. Rank 0 receives the pieces in order, so the savers see exactly what
one process gives them, in the same order: the checkpoint is byte-identical. A rank holds the linear it
quantizes and, on rank 0, the quantized piece it receives (codes: at most a byte per element), so each
rank's memory, reads and quantization time divide by the number of ranks. The owners work while rank 0
saves: rank 0 quantizes piece k while rank 1 quantizes piece k + 1, and receives it next.
"""

from __future__ import annotations

import torch.distributed as dist

from modelslim_core.runtime.distributed import rank_and_world
from modelslim_core.runtime.matching import TracksPatternUse
from modelslim_core.runtime.processor import Processor
from modelslim_core.runtime.unit import Unit


def piece_owners(pieces: list[Unit], unit_index: int, world: int) -> list[int]:
    """The rank that loads and quantizes each piece: linear pieces round robin, the others rank 0."""
    owners: list[int] = []
    linears = 0
    for piece in pieces:
        if piece.subtrees:
            owners.append((unit_index + linears) % world)
            linears += 1
        else:
            owners.append(0)
    return owners


def send_piece(piece: Unit, to_rank: int = 0) -> None:
    """Send the piece's (quantized) modules to `to_rank`; the caller releases them afterwards."""
    modules = [piece.module.get_submodule(path).to("cpu") for path in piece.subtrees]
    dist.send_object_list([modules], dst=to_rank)


def receive_piece(piece: Unit, from_rank: int, device) -> None:
    """Install the piece's modules as quantized by `from_rank` in this rank's unit (`send_piece`'s counterpart)."""
    received: list = [None]
    dist.recv_object_list(received, src=from_rank)
    for path, module in zip(piece.subtrees, received[0], strict=True):
        parent_path, _, attr = path.rpartition(".")
        parent = piece.module.get_submodule(parent_path) if parent_path else piece.module
        setattr(parent, attr, module.to(device))


def _pattern_trackers(processors: list[Processor]) -> list[TracksPatternUse]:
    """The processors (also a group's children) whose include/exclude patterns are tracked."""
    found: list[TracksPatternUse] = []
    for processor in processors:
        if isinstance(processor, TracksPatternUse):
            found.append(processor)
        found += _pattern_trackers(getattr(processor, "children", []))
    return found


def share_pattern_use(processors: list[Processor]) -> None:
    """Every rank learns which include/exclude patterns matched on any rank (each saw only its own pieces), so
    the end-of-run warning about unmatched patterns is the one a single process gives. A collective."""
    world = rank_and_world()[1]
    if world == 1:
        return
    trackers = _pattern_trackers(processors)
    everyone: list = [None] * world
    dist.all_gather_object(everyone, [tracker.filter.used_patterns for tracker in trackers])
    for index, tracker in enumerate(trackers):
        tracker.filter.mark_used([pattern for used in everyone for pattern in used[index]])
