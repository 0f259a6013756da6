"""Resuming a killed run after its last completed unit.

After each unit of a stage with savers, the stage's position, the next unit's calibration inputs, the
processors' and savers' states (the savers' partial files stay on disk) and the run context are written
under `save_path/.modelslim_resume/`, atomically (the state file is renamed into place last). A later run
with the same fingerprint (config, model files, dtype, version) continues from there and writes exactly
the checkpoint an uninterrupted run would; a run with another fingerprint says so and starts over.
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


class ResumeStore:
    def __init__(self, save_path: Path, fingerprint: str):
        self.directory = Path(save_path) / STATE_DIR
        self.fingerprint = fingerprint

    def load(self) -> ResumePoint | None:
        state_file = self.directory / STATE_FILE
        if not state_file.is_file():
            return None
        try:
            state = json.loads(state_file.read_text(encoding="utf-8"))
            if state.get("fingerprint") != self.fingerprint:
                logger.warning("Found the state of an interrupted run with a different config, model or version in %s; "
                               "starting from scratch.", self.directory)
                self.clear()
                return None
            payload = torch.load(self.directory / state["payload"], weights_only=True)
        except (OSError, ValueError, RuntimeError, KeyError) as exc:
            logger.warning("Cannot read the resume state in %s (%s); starting from scratch.", self.directory, exc)
            self.clear()
            return None
        inputs = None if payload["inputs"] is None else [UnitInput(a, k) for a, k in payload["inputs"]]
        logger.info("Resuming stage %s at unit %d (state in %s).", state["stage"], state["next_unit"], self.directory)
        return ResumePoint(state["stage"], state["next_unit"], inputs, state["processors"], state["savers"],
                           payload["context_state"])

    def save(self, point: ResumePoint) -> None:
        self.directory.mkdir(parents=True, exist_ok=True)
        payload_name = f"unit-{point.next_unit:05d}.pt"
        inputs = None if point.inputs is None else [(i.args, i.kwargs) for i in point.inputs]
        partial = self.directory / f".{payload_name}.partial"
        torch.save({"inputs": inputs, "context_state": point.context_state}, partial)
        os.replace(partial, self.directory / payload_name)
        state = {"fingerprint": self.fingerprint, "stage": point.stage, "next_unit": point.next_unit,
                 "payload": payload_name, "processors": point.processors, "savers": point.savers}
        partial_state = self.directory / f".{STATE_FILE}.partial"
        partial_state.write_text(json.dumps(state), encoding="utf-8")
        os.replace(partial_state, self.directory / STATE_FILE)
        for old in self.directory.glob("unit-*.pt"):
            if old.name != payload_name:
                old.unlink()

    def clear(self) -> None:
        shutil.rmtree(self.directory, ignore_errors=True)
