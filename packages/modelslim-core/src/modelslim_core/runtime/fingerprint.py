"""A run's identity: the same config on the same model files with the same numerics and version."""

from __future__ import annotations

import hashlib
import json
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path

import torch


def package_version() -> str:
    try:
        return version("modelslim-core")
    except PackageNotFoundError:
        return "unknown"


def model_files_identity(model_path: Path) -> list[tuple[str, int, int]]:
    """Name, size and modification time of every top-level file: a changed checkpoint changes this."""
    return [(p.name, p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(Path(model_path).iterdir()) if p.is_file()]


def run_fingerprint(config_digest: str, model_path: Path, compute_dtype: torch.dtype, device_type: str) -> str:
    payload = {
        "config": config_digest,
        "model": model_files_identity(model_path),
        "dtype": str(compute_dtype),
        "device": device_type,
        "version": package_version(),
    }
    return hashlib.sha256(json.dumps(payload, sort_keys=True).encode()).hexdigest()
