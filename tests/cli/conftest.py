"""Fixtures of the CLI tests."""

from __future__ import annotations

import logging

import pytest

from tests.cli._helpers import LOG_ENV


@pytest.fixture
def cli_env(monkeypatch: pytest.MonkeyPatch):
    """In-process CLI runs: a clean log-level env, offline env restored, logging config restored afterwards."""
    monkeypatch.delenv(LOG_ENV, raising=False)
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("TRANSFORMERS_OFFLINE", "1")
    root = logging.getLogger()
    saved_handlers, saved_level = root.handlers[:], root.level
    names = ("modelslim", "modelslim_core", "modelslim_runners", "modelslim_save_ascend", "modelslim_vlm",
             "modelslim_sd")
    saved_levels = {name: logging.getLogger(name).level for name in names}
    yield
    root.handlers[:] = saved_handlers
    root.setLevel(saved_level)
    for name, level in saved_levels.items():
        logging.getLogger(name).setLevel(level)
