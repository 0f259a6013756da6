"""ResumeStore under data parallelism, in one process: each rank resumes from its own payload.

The kill/resume runs in test_resume_data_parallel.py show the same end to end with real ranks (minutes); here
the two ranks' stores share one directory and the collectives are identities, so the file protocol is checked
in milliseconds.
"""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modelslim_core.runtime.unit import UnitInput
from modelslim_runners import resume
from modelslim_runners.resume import STATE_DIR, STATE_FILE, ResumePoint, ResumeStore


@pytest.fixture(autouse=True)
def collectives_are_identities(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(resume.dist, "barrier", lambda: None)
    monkeypatch.setattr(resume, "all_reduce", lambda tensor, op: tensor)


def rank_point(rank: int, next_unit: int, piece: dict | None = None) -> ResumePoint:
    """A point whose every per-rank part (inputs, processors, context) says which rank and unit wrote it."""
    inputs = [UnitInput((torch.full((2, 3), float(10 * rank + next_unit)),), {})]
    return ResumePoint("main", next_unit, inputs, [{"rank": rank, "unit": next_unit}], [{"saver": next_unit}],
                       {"rank": rank}, piece)


def save_unit(stores: list[ResumeStore], next_unit: int, piece: dict | None = None) -> None:
    """Every rank writes its payload; rank 0 (last, as after the barrier) commits state.json."""
    for store in reversed(stores):
        store.save(rank_point(store.rank, next_unit, piece))


def test_every_rank_resumes_from_its_own_payload_not_rank_0s(tmp_path: Path) -> None:
    stores = [ResumeStore(tmp_path, "fp", rank, 2) for rank in (0, 1)]
    save_unit(stores, 1)
    save_unit(stores, 2)
    state = json.loads((tmp_path / STATE_DIR / STATE_FILE).read_text())
    assert state["payload"] == "unit-00002"  # no rank in the committed name: each rank adds its own

    for rank in (0, 1):
        point = ResumeStore(tmp_path, "fp", rank, 2).load()
        assert point is not None and point.next_unit == 2
        assert point.processors == [{"rank": rank, "unit": 2}] and point.context_state == {"rank": rank}
        assert torch.equal(point.inputs[0].args[0], torch.full((2, 3), float(10 * rank + 2)))
        assert point.savers == ([{"saver": 2}] if rank == 0 else [])


def test_a_rank_ahead_of_the_commit_keeps_the_committed_payload(tmp_path: Path) -> None:
    """Rank 1 may write and prune before rank 0 commits: what state.json names must still be on disk, for a
    unit boundary and for a group of experts inside a unit (piece payloads) alike."""
    stores = [ResumeStore(tmp_path, "fp", rank, 2) for rank in (0, 1)]
    save_unit(stores, 1)
    save_unit(stores, 2, piece={"next_group": 1})
    stores[1].save(rank_point(1, 2, {"next_group": 2}))  # rank 0 has not committed piece 2 yet
    state = json.loads((tmp_path / STATE_DIR / STATE_FILE).read_text())
    assert state["payload"] == "unit-00002-piece00001"
    names = {p.name for p in (tmp_path / STATE_DIR).glob("unit-*.pt")}
    assert {"unit-00002-piece00001-rank0.pt", "unit-00002-piece00001-rank1.pt"} <= names  # the committed ones
    assert "unit-00001-rank1.pt" not in names  # older than the committed one: pruned
    point = ResumeStore(tmp_path, "fp", 1, 2).load()
    assert point is not None and point.piece == {"next_group": 1} and point.context_state == {"rank": 1}
