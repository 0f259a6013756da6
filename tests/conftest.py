"""Shared fixtures: tiny models (built once per session) and a tiny calibration set."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

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
