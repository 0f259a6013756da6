"""Calibration data of a diffusion run: reuse the cached capture when it provably matches, else capture.

Each denoiser has its file in `dump_data_dir`, named by task and denoiser (`calib_data_<task>_<expert>.pth`).
All files are reused only when every one of them matches the model, the settings and its denoiser; if any is
missing or stale, the float pipeline runs once with every denoiser recorded and all files are rewritten (a
two-expert pipeline records both experts in one generation, each on the timesteps it serves). A file of
ours with another fingerprint is replaced (the log says what changed); anything else is refused
(calib_file.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from modelslim_core.errors import DatasetError
from modelslim_core.runtime.unit import UnitInput
from modelslim_sd.adapter import Denoiser, DiffusionAdapter
from modelslim_sd.calib_file import read_calib_file, write_calib_file
from modelslim_sd.fingerprint import Fingerprint, calibration_fingerprint

logger = logging.getLogger(__name__)


def _cached(path: Path, fingerprint: Fingerprint) -> list[UnitInput] | None:
    if not path.exists():
        logger.info("No calibration file %s yet.", path)
        return None
    stored = read_calib_file(path)
    if stored.fingerprint.digest == fingerprint.digest:
        return stored.records
    logger.warning("%s was captured with other inputs: %s. Capturing again.",
                   path, "; ".join(fingerprint.differences(stored.fingerprint)))
    return None


def obtain_calibration(
    adapter: DiffusionAdapter, config: Any, dump_dir: Path, device: torch.device, dtype: torch.dtype
) -> dict[str, list[UnitInput]]:
    """Every denoiser's recorded calls for `config` (by component): from the cache files when all are valid,
    else freshly captured."""
    denoisers: list[Denoiser] = adapter.denoisers()
    files = {d.component: (dump_dir / adapter.calibration_file_name(config, d),
                           calibration_fingerprint(adapter, config, dtype, d)) for d in denoisers}
    cached = {component: _cached(path, fingerprint) for component, (path, fingerprint) in files.items()}
    if all(records is not None for records in cached.values()):
        for component, (path, _) in files.items():
            logger.info("Reusing %d recorded calls from %s (same model and settings).", len(cached[component]), path)
        return cached
    started = time.perf_counter()
    logger.info("Capturing calibration data: running the float pipeline on %s.", device)
    captured = adapter.capture_calibration(config, device, dtype)
    dump_dir.mkdir(parents=True, exist_ok=True)
    for component, (path, fingerprint) in files.items():
        records = captured.get(component) or []
        if not records:
            raise DatasetError(
                f"the float pipeline never called {component} with these settings, so it has no calibration data.",
                "use more sample_steps so every expert serves some timesteps, or data-free processors only.",
            )
        write_calib_file(path, fingerprint, records)
        logger.info("Recorded %d calls of %s in %.1f s; saved to %s.", len(records), component,
                    time.perf_counter() - started, path)
    return captured
