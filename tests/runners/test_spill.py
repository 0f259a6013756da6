"""Calibration activations spilled to disk: same values read back, files removed, same checkpoint."""

from __future__ import annotations

import logging
from pathlib import Path

import torch

from modelslim.app.quick_quant import QuantArgs, run_quant
from modelslim_core.runtime.unit import UnitInput
from modelslim_runners.spill import SPILL_DIR, SPILL_ENV, ActivationSpill, SpilledList, spill_threshold
from tests.quant_runs import checkpoint_digest, mixed_config


def test_lists_under_the_threshold_stay_in_memory_and_larger_ones_go_to_disk(tmp_path):
    items = [UnitInput((torch.randn(2, 3),), {"mask": torch.ones(3)}) for _ in range(4)]  # 36 bytes each
    spill = ActivationSpill(tmp_path / "spill", threshold=100)
    assert spill.keep(items[:2]) == items[:2]  # 72 bytes: kept as a plain list
    spilled = spill.keep(iter(items))  # passes 100 bytes at the third item: all four go to disk
    assert isinstance(spilled, SpilledList) and len(spilled) == 4 and spilled.nbytes == 144
    assert len(list(spilled.directory.glob("*.pt"))) == 4
    for original, loaded in zip(items, spilled, strict=True):
        assert torch.equal(loaded.args[0], original.args[0]) and torch.equal(loaded.kwargs["mask"], original.kwargs["mask"])
    assert torch.equal(spilled[-1].args[0], items[-1].args[0])
    directory = spilled.directory
    del spilled  # dropping the list deletes its files
    assert not directory.exists()
    kept = spill.keep(items)
    spill.cleanup()
    assert not (tmp_path / "spill").exists() and len(kept) == 4


def test_threshold_comes_from_the_environment_or_available_memory(monkeypatch):
    monkeypatch.setenv(SPILL_ENV, "0")
    assert spill_threshold() == 0
    monkeypatch.setenv(SPILL_ENV, "1e6")
    assert spill_threshold() == 1_000_000
    monkeypatch.delenv(SPILL_ENV)
    assert spill_threshold() > 0



def test_forced_spill_writes_the_in_memory_checkpoint(tiny_models, small_calib, tmp_path, monkeypatch, caplog):
    model = tiny_models("qwen2")
    config = tmp_path / "mixed.yaml"
    config.write_text(mixed_config(small_calib))
    in_memory, spilled = tmp_path / "memory", tmp_path / "spilled"
    monkeypatch.setenv(SPILL_ENV, str(2**40))
    run_quant(QuantArgs(str(model), str(in_memory), "Qwen2-demo", config_path=str(config), device="cpu"))
    monkeypatch.setenv(SPILL_ENV, "0")
    with caplog.at_level(logging.INFO, logger="modelslim_runners"):
        run_quant(QuantArgs(str(model), str(spilled), "Qwen2-demo", config_path=str(config), device="cpu"))
    assert "keeping them on disk" in caplog.text
    assert not (spilled / SPILL_DIR).exists()
    assert checkpoint_digest(spilled) == checkpoint_digest(in_memory)
