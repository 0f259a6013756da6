"""Fixtures of the SD tests: one tiny Wan2.1 pipeline directory per session (never written to by tests)."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.sd.tiny_wan import make_tiny_wan


@pytest.fixture(scope="session")
def tiny_wan(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_tiny_wan(tmp_path_factory.mktemp("wan2_1-tiny"))
