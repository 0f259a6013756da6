"""Checks on --model_path, --save_path and --config_path, done before any work (and before torch is imported).

The model directory is never written to: the output may not be the model directory or lie inside it. A
save_path that cannot be created or written is reported here, by name, instead of as an OSError minutes later.
"""

from __future__ import annotations

import os
import shutil
from pathlib import Path

from modelslim_core.errors import ModelError, SaveError, UsageError


def check_model_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.exists():
        raise ModelError(f"model_path {text!r} does not exist.", "pass the local directory of the model to quantize.")
    if not path.is_dir():
        raise ModelError(f"model_path {text!r} is not a directory.", "pass the directory that holds config.json.")
    if not os.access(path, os.R_OK | os.X_OK):
        raise ModelError(f"model_path {text!r} cannot be read by this user.", "fix its permissions or run as its owner.")
    if not any(path.iterdir()):
        raise ModelError(f"model_path {text!r} is empty.", "pass the directory that holds config.json and the weights.")
    return path.resolve()  # which files must be there (config.json, model_index.json) is the adapter's check


def check_quant_path(text: str) -> Path:
    """An existing directory; whether it holds a checkpoint is the reference runtime's check (it names the file)."""
    path = Path(text).expanduser()
    if not path.is_dir():
        state = "is not a directory" if path.exists() else "does not exist"
        raise ModelError(f"quant_path {text!r} {state}.", "pass the --save_path of a finished `msmodelslim quant` run.")
    return path.resolve()


def _nearest_existing(path: Path) -> Path:
    while not path.exists() and path != path.parent:
        path = path.parent
    return path


def check_save_path(text: str, model_path: Path | None = None) -> Path:
    path = Path(text).expanduser().resolve()
    if model_path is not None and (path == model_path or model_path in path.parents):
        raise UsageError(
            f"save_path {text!r} is the model directory or inside it; ModelSlim never writes into --model_path.",
            "choose a save_path outside the model directory.",
        )
    if path.exists() and not path.is_dir():
        raise UsageError(f"save_path {text!r} exists and is not a directory.", "choose a directory path.")
    existing = _nearest_existing(path)
    if not existing.is_dir():
        raise SaveError(
            f"save_path {text!r} cannot be created: {str(existing)!r} is a file, not a directory.",
            "choose a save_path whose parent directories are directories.",
        )
    if _is_pseudo_filesystem(existing):
        raise SaveError(
            f"save_path {text!r} cannot be created: {str(existing)!r} is a kernel pseudo file system that holds no "
            "ordinary files.",
            "choose a directory on a disk, e.g. under your home directory.",
        )
    if not os.access(existing, os.W_OK | os.X_OK):
        raise SaveError(
            f"save_path {text!r} cannot be written: {str(existing)!r} is not writable by this user.",
            "choose a directory you can write to (e.g. under your home directory), or fix its permissions.",
        )
    return path


def _is_pseudo_filesystem(path: Path) -> bool:
    """/proc and /sys accept no new files even for root (os.access says yes there)."""
    return any(str(path) == root or str(path).startswith(root + "/") for root in ("/proc", "/sys"))


def check_config_path(text: str) -> Path:
    path = Path(text).expanduser()
    if not path.is_file():
        state = "is a directory" if path.is_dir() else "does not exist"
        raise UsageError(f"config_path {text!r} {state}.", "pass a YAML config file (e.g. one of practices/*/*.yaml).")
    return path


def create_save_path(path: Path) -> bool:
    """Create save_path (and parents) and prove it is writable; True when this call created it.

    The probe catches what permission bits cannot show: read-only mounts, full disks, pseudo file systems."""
    created = not path.exists()
    try:
        path.mkdir(parents=True, exist_ok=True, mode=0o750)
        probe = path / ".modelslim-write-test"
        probe.write_bytes(b"")
        probe.unlink()
    except OSError as exc:
        if created:
            shutil.rmtree(path, ignore_errors=True)
        raise SaveError(f"save_path {str(path)!r} cannot be written: {exc.strerror or exc}.",
                        "choose a directory you can write to, on a file system with free space.") from None
    return created
