"""The calibration file: recorded transformer calls plus the fingerprint of their capture.

Layout (a `torch.save` of plain containers only): `{"format": "modelslim-sd-calibration", "version": 1,
"fingerprint": <sha256>, "model": <model digest>, "settings": {...}, "records": [{"args": [...],
"kwargs": {...}}, ...]}`, every tensor on the CPU. It is read with `torch.load(weights_only=True)`, which
never constructs arbitrary objects, and then checked field by field: a file that is corrupt, written by
another tool (e.g. the reference's bare list) or by another version is refused, not guessed at.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelslim_core.errors import DatasetError
from modelslim_core.runtime.unit import UnitInput
from modelslim_sd.fingerprint import Fingerprint

FORMAT = "modelslim-sd-calibration"
VERSION = 1
#: Deepest nesting of containers allowed inside one recorded argument.
_MAX_DEPTH = 8
_SCALARS = (bool, int, float, str, type(None))


@dataclass
class StoredCalibration:
    fingerprint: Fingerprint
    records: list[UnitInput]


def write_calib_file(path: Path, fingerprint: Fingerprint, records: list[UnitInput]) -> None:
    """Save atomically: a crash never leaves a half-written file under the real name."""
    payload = {
        "format": FORMAT,
        "version": VERSION,
        "fingerprint": fingerprint.digest,
        "model": fingerprint.model,
        "settings": fingerprint.settings,
        "records": [{"args": list(record.args), "kwargs": dict(record.kwargs)} for record in records],
    }
    partial = path.with_name(f".{path.name}.partial")
    try:
        torch.save(payload, partial)
        os.replace(partial, path)
    finally:
        partial.unlink(missing_ok=True)


def _refuse(path: Path, problem: str) -> DatasetError:
    return DatasetError(
        f"calibration file {path} {problem}; it was not used.",
        "delete it so the data is captured again, or set multimodal_sd_config.dump_config.dump_data_dir to "
        "another directory.",
    )


def _check_value(value: Any, depth: int) -> bool:
    if isinstance(value, (torch.Tensor, *_SCALARS)):
        return True
    if depth >= _MAX_DEPTH:
        return False
    if isinstance(value, (list, tuple)):
        return all(_check_value(item, depth + 1) for item in value)
    if isinstance(value, dict):
        return all(isinstance(k, str) and _check_value(v, depth + 1) for k, v in value.items())
    return False


def _record(raw: Any) -> UnitInput | None:
    if not (isinstance(raw, dict) and set(raw) == {"args", "kwargs"}):
        return None
    args, kwargs = raw["args"], raw["kwargs"]
    if not (isinstance(args, list) and isinstance(kwargs, dict) and _check_value(args, 0) and _check_value(kwargs, 0)):
        return None
    return UnitInput(args=tuple(args), kwargs=kwargs)


def read_calib_file(path: Path) -> StoredCalibration:
    """Load and check a calibration file; a DatasetError for anything that is not exactly our format."""
    try:
        data = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as exc:  # corrupt bytes, or a pickle that would build objects: never unpickled
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        raise _refuse(path, f"cannot be read safely ({reason})") from None
    if not (isinstance(data, dict) and data.get("format") == FORMAT):
        raise _refuse(path, "was not written by ModelSlim")
    if data.get("version") != VERSION:
        raise _refuse(path, f"has format version {data.get('version')!r}, this ModelSlim reads {VERSION}")
    fingerprint, model, settings = data.get("fingerprint"), data.get("model"), data.get("settings")
    raw_records = data.get("records")
    if not (isinstance(fingerprint, str) and isinstance(model, str) and isinstance(settings, dict)
            and isinstance(raw_records, list) and raw_records):
        raise _refuse(path, "lacks its fingerprint or records")
    recorded = Fingerprint(model=model, settings=settings)
    if recorded.digest != fingerprint:
        raise _refuse(path, "has a fingerprint that does not match its own settings (it was edited)")
    records = [_record(raw) for raw in raw_records]
    if any(record is None for record in records):
        raise _refuse(path, "holds a record that is not (args, kwargs) of tensors and plain values")
    return StoredCalibration(recorded, records)
