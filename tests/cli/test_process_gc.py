"""The CLI process imports torch/transformers uncollected and freezes them; in-process callers are untouched."""

from __future__ import annotations

import gc

import pytest

from modelslim.cli import process_gc
from modelslim.cli.main import main


@pytest.fixture
def unfrozen():
    """Whatever a test freezes goes back to the collector afterwards (this pytest process keeps collecting)."""
    before = gc.get_freeze_count()
    yield before
    gc.unfreeze()


def test_heavy_command_imports_uncollected_then_freezes_and_collects_again(monkeypatch, unfrozen):
    monkeypatch.setattr(process_gc, "HEAVY_MODULES", ("json", "csv"))
    collections: list[int] = []

    def count(phase: str, info: dict) -> None:
        if phase == "start":
            collections.append(info["generation"])

    gc.callbacks.append(count)
    try:
        process_gc.import_frozen("quant")
    finally:
        gc.callbacks.remove(count)
    assert gc.isenabled()
    assert gc.get_freeze_count() > unfrozen
    assert collections == []  # nothing was collected while importing


def test_light_commands_leave_the_collector_alone(unfrozen):
    for command in ("list", "convert-config", None):
        process_gc.import_frozen(command)
    assert gc.get_freeze_count() == unfrozen and gc.isenabled()


def test_main_with_an_argument_list_does_not_freeze(tmp_path, cli_env, unfrozen):
    code = main(["quant", "--model_path", str(tmp_path / "missing"), "--save_path", str(tmp_path / "out"),
                 "--model_type", "Qwen2-demo", "--quant_type", "w8a8"])
    assert code != 0  # a bad path: refused before any import
    assert gc.get_freeze_count() == unfrozen and gc.isenabled()
