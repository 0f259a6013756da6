"""Fixtures for conversion tests: source checkpoints built once per session (tests never write into them)."""

from __future__ import annotations

import pytest

from tests.convert.checkpoints import fp8_block_checkpoint, packed_int4_checkpoint


@pytest.fixture(scope="session")
def fp8_source(tmp_path_factory):
    """(directory, expected float weights) of a tiny Qwen3-shaped FP8-block checkpoint."""
    return fp8_block_checkpoint(tmp_path_factory.mktemp("fp8-source"))


@pytest.fixture(scope="session")
def int4_source(tmp_path_factory):
    """(directory, expected float weights) of a tiny checkpoint whose MLP linears are pack-quantized int4."""
    return packed_int4_checkpoint(tmp_path_factory.mktemp("int4-source"))
