"""Fixtures shared by the family tests."""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.vlm.media_files import media_set


@pytest.fixture(scope="session")
def media_index(tmp_path_factory) -> Path:
    """A generated image / audio / video calibration set (index.jsonl)."""
    return media_set(tmp_path_factory.mktemp("family-media") / "set")
