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


def write_small_calib(path: Path) -> Path:
    """Four short calibration samples, enough to exercise static calibration quickly."""
    texts = [
        "The quick brown fox jumps over the lazy dog.",
        "def add(a, b):\n    return a + b",
        "量化可以减少模型的显存占用。",
        "Q: What is 12 * 7? A: 84.",
    ]
    path.write_text("\n".join(json.dumps({"inputs_pretokenized": t}, ensure_ascii=False) for t in texts) + "\n")
    return path


@pytest.fixture
def small_calib(tmp_path: Path) -> Path:
    """The four samples in this test's tmp_path."""
    return write_small_calib(tmp_path / "calib.jsonl")


@pytest.fixture(scope="session")
def session_calib(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The same four samples once per session, for module-scoped fixtures that share one expensive run."""
    return write_small_calib(tmp_path_factory.mktemp("calib") / "calib.jsonl")


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
    "tests/smoothing/test_distributed_stats.py",
    "tests/vlm/test_vlm_quant_e2e.py",
    "tests/runners/test_resume.py",
    "tests/smoothing/test_outliers.py",
    "tests/tune/test_moe_vlm.py",
    "tests/families/test_vlm_families.py",
    "tests/families/test_mtp.py",
})

#: Single slow tests in otherwise fast modules (a real subprocess, several ranks, a multi-round tune), by node
#: id without parameters: each took over ~3 s alone on the 2-core host.
SLOW_TESTS = frozenset({
    "tests/cli/test_confirmation.py::test_fallback_without_terminal_or_yes_stops_in_a_real_process",
    "tests/sparse/test_sparse_config.py::test_a_multi_device_run_is_refused_before_any_work",
    "tests/tune/test_tune.py::test_standing_high_keeps_the_anti_outlier_strategy_that_needs_least_rollback",
    "tests/tune/test_tune.py::test_resume_reuses_recorded_rounds_and_the_time_budget_stops_cleanly",
    "tests/firsthour/test_mistakes.py::test_interrupt_during_model_loading",
    "tests/sd/test_generation_calibration.py::test_image_conditioned_capture",
    "tests/runners/test_moe_pieces.py::test_a_run_killed_between_pieces_resumes_to_the_same_checkpoint",
    "tests/runners/test_compute_once.py::test_every_item_is_computed_by_one_rank_and_shared",
    "tests/tune/test_tune.py::test_service_oriented_judge_with_a_local_fake_server",
    # whole-practice runs already covered in the fast subset by tests/engines/test_practice_sweep.py's FAST list
    "tests/families/test_family_practices.py::test_family_practice_quantizes_reloads_and_keeps_release_names",
    "tests/runners/test_moe_pieces.py::test_pieces_write_the_whole_layer_checkpoint",
    "tests/runners/test_pieces.py::test_streamed_layer_wise_checkpoint_equals_model_wise",
    "tests/smoothing/test_function_preservation.py::test_float_smoothing_keeps_logits_bf16",
    "tests/smoothing/test_function_preservation.py::test_float_smoothing_keeps_logits_of_moe_families",
    "tests/smoothing/test_w8a8_practices.py::test_quant_type_w8a8_smooths_the_tiny_model",
    "tests/interop/test_compressed_tensors.py::test_transformers_loads_the_export_and_matches_the_reference_runtime",
    "tests/interop/test_compressed_tensors.py::test_quant_type_w4a16_uses_the_default_practice_and_writes_compressed_tensors",
    "tests/interop/test_compressed_tensors.py::test_eval_reads_a_compressed_tensors_checkpoint_with_transformers",
    "tests/sparse/test_practices.py::test_sparse_quant_types_run_and_reload",
    "tests/core/test_adaptive_group_size.py::test_w4a16_practice_adapts_its_group_size_to_the_model_and_says_so",
    "tests/sd/test_sd_calibration.py::test_capture_reuse_and_recapture",
    "tests/core/test_histogram.py::test_search_finds_the_error_minimising_range_and_beats_minmax",
    "tests/attention/test_c8_practices.py::test_quant_type_w8a8c8_runs_and_reloads",
    "tests/families/test_longcat_flash.py::test_longcat_quantizes_and_reloads",
})


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    root = Path(str(config.rootpath))
    modules: dict[str, object] = {}
    for item in items:
        module = str(Path(str(item.path)).relative_to(root))
        modules[module] = getattr(item, "module", None)
        if module in SLOW_MODULES or f"{module}::{item.originalname}" in SLOW_TESTS:
            item.add_marker(pytest.mark.slow)
    split = (node.split("::") for node in SLOW_TESTS)
    stale = sorted(f"{path}::{name}" for path, name in split if path in modules and not hasattr(modules[path], name))
    if stale:  # a renamed test would silently join the fast subset
        raise pytest.UsageError(f"tests/conftest.py SLOW_TESTS names tests that no longer exist: {stale}")
