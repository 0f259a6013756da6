"""Shared fixtures: tiny models (built once per session), a tiny calibration set, the in-process CLI env."""

from __future__ import annotations

import json
import logging
from pathlib import Path

import pytest
import torch

from tests.cli._helpers import LOG_ENV
from tests.tiny_models import make_tiny_model


@pytest.fixture(scope="session")
def tiny_models(tmp_path_factory: pytest.TempPathFactory):
    """Factory: tiny_models(arch, dtype) -> path of a cached checkpoint (do not write into it)."""
    cache: dict[tuple[str, torch.dtype], Path] = {}

    def get(arch: str = "qwen2", dtype: torch.dtype = torch.bfloat16) -> Path:
        key = (arch, dtype)
        if key not in cache:
            name = f"{arch}-{str(dtype).split('.')[-1]}"
            cache[key] = make_tiny_model(tmp_path_factory.mktemp(name), arch, dtype)
        return cache[key]

    return get


@pytest.fixture
def small_calib(tmp_path: Path) -> Path:
    """Four short calibration samples, enough to exercise static calibration quickly."""
    path = tmp_path / "calib.jsonl"
    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "def add(a, b):\n    return a + b",
        "量化可以减少模型的显存占用。",
        "Q: What is 12 * 7? A: 84.",
    ]
    path.write_text("\n".join(json.dumps({"inputs_pretokenized": t}, ensure_ascii=False) for t in texts) + "\n")
    return path


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
