"""What a calibration file was captured from: the model's files and the generation settings.

Cached calibration data is reused only when both match, so a changed prompt, step count, size, dtype or a
replaced checkpoint always triggers a new capture. Hashing every byte of a 14B checkpoint would take
minutes, so weight files contribute their size and their first and last MiB (a re-saved or fine-tuned
checkpoint changes those); small files (configs, tokenizers) are hashed whole.
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from modelslim_sd.adapter import Denoiser, DiffusionAdapter

#: Bumped when the meaning of the recorded data changes, so older files are captured again.
CAPTURE_VERSION = 1
#: Files up to this size are hashed whole; larger ones by size, head and tail.
_WHOLE_FILE_LIMIT = 16 * 2**20
_SAMPLE = 2**20


def _file_digest(path: Path) -> str:
    size = path.stat().st_size
    digest = hashlib.sha256(str(size).encode())
    with path.open("rb") as handle:
        if size <= _WHOLE_FILE_LIMIT:
            digest.update(handle.read())
        else:
            digest.update(handle.read(_SAMPLE))
            handle.seek(size - _SAMPLE)
            digest.update(handle.read(_SAMPLE))
    return digest.hexdigest()


def files_digest(paths: list[str]) -> list[str]:
    """Content digests of input files (e.g. the images a calibration edits): a file changed in place is new data."""
    return [_file_digest(Path(text).expanduser()) for text in paths]


def model_digest(model_path: Path) -> str:
    """A digest of every non-hidden file under model_path (relative name + content sample)."""
    digest = hashlib.sha256()
    for path in sorted(model_path.rglob("*")):
        relative = path.relative_to(model_path)
        if path.is_file() and not any(part.startswith(".") for part in relative.parts):
            digest.update(f"{relative.as_posix()}\0{_file_digest(path)}\n".encode())
    return digest.hexdigest()


@dataclass(frozen=True)
class Fingerprint:
    """The model digest and the settings (JSON values) of one capture."""

    model: str
    settings: dict[str, Any]

    @property
    def digest(self) -> str:
        text = json.dumps({"model": self.model, "settings": self.settings}, sort_keys=True)
        return hashlib.sha256(text.encode()).hexdigest()

    def differences(self, other: Fingerprint) -> list[str]:
        """What differs from `other`, for the log line that explains a new capture."""
        changed = ["the model files"] if self.model != other.model else []
        for key in sorted(set(self.settings) | set(other.settings)):
            if self.settings.get(key) != other.settings.get(key):
                changed.append(f"{key} ({other.settings.get(key)!r} -> {self.settings.get(key)!r})")
        return changed


def calibration_fingerprint(
    adapter: DiffusionAdapter, config: Any, dtype: torch.dtype, denoiser: Denoiser
) -> Fingerprint:
    settings = {
        **adapter.capture_settings(config),
        "adapter": adapter.family,
        "denoiser": denoiser.component,
        "dtype": str(dtype).removeprefix("torch."),
        "capture_version": CAPTURE_VERSION,
    }
    return Fingerprint(model=model_digest(adapter.model_path), settings=settings)
