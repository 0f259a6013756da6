"""Calibration data of a diffusion run: reuse the cached capture when it provably matches, else capture.

The file lives in `dump_data_dir` under the adapter's per-task, per-component name. A file whose
fingerprint matches the model and the settings is loaded; a file of ours with another fingerprint is
replaced by a new capture (the log says what changed); anything else is refused (calib_file.py).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path
from typing import Any

import torch

from modelslim_core.runtime.unit import UnitInput
from modelslim_sd.adapter import DiffusionAdapter
from modelslim_sd.calib_file import read_calib_file, write_calib_file
from modelslim_sd.fingerprint import calibration_fingerprint

logger = logging.getLogger(__name__)


def obtain_calibration(
    adapter: DiffusionAdapter, config: Any, dump_dir: Path, device: torch.device, dtype: torch.dtype
) -> list[UnitInput]:
    """The recorded component calls for `config`: from the cache file when valid, else freshly captured."""
    path = dump_dir / adapter.calibration_file_name(config)
    fingerprint = calibration_fingerprint(adapter, config, dtype)
    if path.exists():
        stored = read_calib_file(path)
        if stored.fingerprint.digest == fingerprint.digest:
            logger.info("Reusing %d recorded calls from %s (same model and settings).", len(stored.records), path)
            return stored.records
        logger.warning(
            "%s was captured with other inputs: %s. Capturing again.",
            path, "; ".join(fingerprint.differences(stored.fingerprint)),
        )
    started = time.perf_counter()
    logger.info("Capturing calibration data: running the float pipeline on %s.", device)
    records = adapter.capture_calibration(config, device, dtype)
    dump_dir.mkdir(parents=True, exist_ok=True)
    write_calib_file(path, fingerprint, records)
    logger.info("Recorded %d calls in %.1f s; saved to %s.", len(records), time.perf_counter() - started, path)
    return records
