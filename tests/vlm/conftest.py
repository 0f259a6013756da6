"""Tiny VLM checkpoints (built once per session) and a generated multimodal calibration set."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vlm.media_files import media_set
from tests.vlm.tiny_vlm import make_qwen2_5_omni_thinker, make_qwen2_5_vl, make_qwen3_vl

BUILDERS = {
    "qwen2_5_vl": make_qwen2_5_vl,
    "qwen3_vl": make_qwen3_vl,
    "qwen2_5_omni_thinker": make_qwen2_5_omni_thinker,
    "qwen3_vl_moe": lambda target: make_qwen3_vl(target, moe=True),
}


@pytest.fixture(scope="session")
def tiny_vlms(tmp_path_factory: pytest.TempPathFactory):
    built: dict[str, Path] = {}

    def get(family: str) -> Path:
        if family not in built:
            built[family] = BUILDERS[family](tmp_path_factory.mktemp(family) / "model")
        return built[family]

    return get


@pytest.fixture(scope="session")
def media_index(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return media_set(tmp_path_factory.mktemp("vlm-media") / "set")
