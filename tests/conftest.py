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


#: Modules whose tests are end-to-end runs (a whole quantization in a subprocess, several data-parallel worker
#: processes, full SD/VLM pipelines). `pytest -m "not slow"` skips them: the fast subset README.md promises.
#: Listed here, in one place, so a module's speed class is visible and changing it is one line.
SLOW_MODULES = frozenset({
    "tests/attention/test_attention_dp.py",
    "tests/autoround/test_autoround_e2e.py",
    "tests/cli/test_eval.py",
    "tests/cli/test_quant_e2e.py",
    "tests/migration/test_reference_configs.py",
    "tests/moe/test_moe_quant_e2e.py",
    "tests/rotation/test_rotation_dp_and_savers.py",
    "tests/runners/test_data_parallel.py",
    "tests/runners/test_resume_data_parallel.py",
    "tests/sd/test_generation_families.py",
    "tests/sd/test_sd_quant_e2e.py",
    "tests/smoothing/test_data_parallel_smoothing.py",
    "tests/smoothing/test_distributed_stats.py",
    "tests/vlm/test_vlm_quant_e2e.py",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    for item in items:
        if str(Path(str(item.path)).relative_to(root)) in SLOW_MODULES:
            item.add_marker(pytest.mark.slow)
