"""Resuming a killed run after its last completed unit.

After each unit of a stage with savers (and after each group of routed experts of a MoE unit processed in
pieces, with the group's progress, and inside a unit streamed linear by linear every couple of GiB read, with
the next piece; `state.json` names the payload it commits), the stage's position, the
next unit's calibration inputs, the
processors' and savers' states (the savers' partial files stay on disk) and the run context are written
under `save_path/.modelslim_resume/`, atomically (the state file is renamed into place last). A later run
with the same fingerprint (config, model files, dtype, version) continues from there and writes exactly
the checkpoint an uninterrupted run would; a run with another fingerprint says so and starts over.

Data-parallel runs: every rank writes its own payload (its share of the calibration inputs, its processors'
and context state) as `unit-NNNNN-rankR.pt`; after a barrier (every rank's payload for that unit exists)
rank 0, which alone has savers, commits `state.json` with the savers' state. `state.json` names the payload
without its rank (`unit-NNNNN[-pieceGGGGG]`): each rank reads its own file of that name, never rank 0's. A rank
deletes a payload only once a newer one is committed, so the committed payloads always exist. On resume all ranks read the
committed state and agree (one all-reduce) to resume only if every rank found its payload; the number of
ranks is part of the state, since the samples' split depends on it.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist

from modelslim_core.runtime.distributed import all_reduce
from modelslim_core.runtime.unit import UnitInput

logger = logging.getLogger(__name__)

STATE_DIR = ".modelslim_resume"
STATE_FILE = "state.json"


@dataclass
class ResumePoint:
    stage: str
    next_unit: int
    inputs: list[UnitInput] | None
    processors: list[dict]
    savers: list[dict]
    context_state: dict[str, Any]
    #: Progress inside unit `next_unit` when it is processed in pieces (moe_pieces.py: groups of experts done,
    #: their summed outputs, routing counts); None at a unit boundary.
    piece: dict[str, Any] | None = None


def piece_position(piece: dict[str, Any]) -> int:
    """Where inside its unit a resume point is: the next group of experts, or the next streamed piece."""
    return piece["next_group"] if "next_group" in piece else piece["next_piece"]


class ResumeStore:
    def __init__(self, save_path: Path, fingerprint: str, rank: int = 0, world: int = 1):
        self.directory = Path(save_path) / STATE_DIR
        self.fingerprint = fingerprint
        self.rank, self.world = rank, world
        #: This rank's payload of the last committed point (data parallel: kept until a newer one is committed).
        self._committed: str | None = None

    @staticmethod
    def _payload_stem(next_unit: int, piece: int | None = None) -> str:
        """The payload's name shared by all ranks (what state.json records)."""
        return f"unit-{next_unit:05d}" + ("" if piece is None else f"-piece{piece:05d}")

    def _payload_name(self, stem: str) -> str:
        """This rank's file of a payload: its inputs and processors' state are its own share's."""
        return f"{stem}.pt" if self.world == 1 else f"{stem}-rank{self.rank}.pt"

    def load(self) -> ResumePoint | None:
        """The committed resume point (every rank's own share), or None to start from scratch on every rank."""
        point = self._read()
        if self.world > 1:  # resume only if every rank can; else all start over
            if all_reduce(torch.tensor([int(point is not None)]), "min").item() == 0:
                point = None
                dist.barrier()  # nobody is still reading when rank 0 clears
                if self.rank == 0:
                    self.clear()
        if point is not None:
            logger.info("Resuming stage %s at unit %d (state in %s).", point.stage, point.next_unit, self.directory)
        return point

    def _read(self) -> ResumePoint | None:
        state_file = self.directory / STATE_FILE
        if not state_file.is_file():
            return None
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
            if state.get("fingerprint") != self.fingerprint or state.get("world", 1) != self.world:
                logger.warning("Found the state of an interrupted run with a different config, model or version (or "
                               "number of devices) in %s; starting from scratch.", self.directory)
                self._clear_alone()
                return None
            payload_name = self._payload_name(state.get("payload") or self._payload_stem(state["next_unit"]))
            payload = torch.load(self.directory / payload_name, weights_only=True)
            self._committed = payload_name
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            logger.warning("Cannot read the resume state in %s (%s); starting from scratch.", self.directory, exc)
            self._clear_alone()
            return None
        inputs = None if payload["inputs"] is None else [UnitInput(a, k) for a, k in payload["inputs"]]
        return ResumePoint(state["stage"], state["next_unit"], inputs, payload["processors"],
                           state["savers"] if self.rank == 0 else [], payload["context_state"], payload.get("piece"))

    def _clear_alone(self) -> None:
        """Clear now if no other rank may still read the directory (data-parallel: `load` clears after a barrier)."""
        if self.world == 1:
            self.clear()

    def save(self, point: ResumePoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        stem = self._payload_stem(point.next_unit, None if point.piece is None else piece_position(point.piece))
        payload_name = self._payload_name(stem)
        inputs = None if point.inputs is None else [(i.args, i.kwargs) for i in point.inputs]
        partial = self.directory / f".{payload_name}.partial"
        torch.save({"inputs": inputs, "processors": point.processors, "context_state": point.context_state,
                    "piece": point.piece}, partial)
        os.replace(partial, self.directory / payload_name)
        if self.world > 1:
            dist.barrier()  # every rank's payload for this unit is on disk before it is committed
        if self.rank == 0:
            state = {"fingerprint": self.fingerprint, "world": self.world, "stage": point.stage,
                     "next_unit": point.next_unit, "payload": stem, "savers": point.savers}
            partial_state = self.directory / f".{STATE_FILE}.partial"
            partial_state.write_text(json.dumps(state), encoding="utf-8")
            os.replace(partial_state, self.directory / STATE_FILE)
        # Data-parallel: the previous payload may still be the committed one (rank 0 commits after the barrier).
        keep = {payload_name} if self.world == 1 else {payload_name, self._committed}
        self._committed = payload_name
        for old in self.directory.glob(f"unit-*{'' if self.world == 1 else f'-rank{self.rank}'}.pt"):
            if old.name not in keep:
                old.unlink(missing_ok=True)

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
