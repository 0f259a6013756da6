"""Fixtures of the engine-conformance tests: tiny family models (built once per session) and a tiny dataset."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from tests.engines._practices import FAMILIES


@pytest.fixture(scope="session")
def sweep_dataset(tmp_path_factory) -> Path:
    path = tmp_path_factory.mktemp("sweep-calib") / "calib.jsonl"
    path.write_text("\n".join(json.dumps({"text": t}) for t in (
        "Every practice is judged by the serving engine's loader.", "def f(x):\n    return 3 * x + 1")) + "\n")
    return path


@pytest.fixture(scope="session")
def family_model(tmp_path_factory):
    built: dict[str, Path] = {}

    def get(folder: str) -> Path:
        if folder not in built:
            builder, _ = FAMILIES[folder]
            built[folder] = builder(tmp_path_factory.mktemp(folder) / "model")
        return built[folder]

    return get
