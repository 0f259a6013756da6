"""Calibration media for the VLM tests: real files from the calib tool's writers, and broken ones."""

from __future__ import annotations

import importlib.util
import json
from pathlib import Path

from tests.tiny_models import REPO


def _load_tool():
    spec = importlib.util.spec_from_file_location("make_vlm_calib", REPO / "tools" / "make_vlm_calib.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


calib_tool = _load_tool()


def write_index(folder: Path, entries: list, name: str = "index.jsonl") -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    if name.endswith(".jsonl"):
        path.write_text("".join((e if isinstance(e, str) else json.dumps(e)) + "\n" for e in entries), encoding="utf-8")
    else:
        path.write_text(json.dumps(entries), encoding="utf-8")
    return path


def media_set(folder: Path) -> Path:
    """An image, a png, a 44.1 kHz wav (resampled on load), an mp4 and a five-entry index.jsonl."""
    folder.mkdir(parents=True, exist_ok=True)
    calib_tool.write_image(folder / "a.jpg", seed=1)
    calib_tool.write_image(folder / "b.png", 64, 64, seed=2)
    calib_tool.write_wav(folder / "tone.wav", seconds=0.5, rate=44100)
    calib_tool.write_mp4(folder / "clip.mp4", frames=6, fps=3)
    return write_index(folder, [
        {"image": "a.jpg", "text": "What is in the picture?"},
        {"image": "b.png"},
        {"video": "clip.mp4", "text": "What moves?"},
        {"image": "a.jpg", "audio": "tone.wav", "video": "clip.mp4", "text": "Describe everything."},
        {"text": "Just text."},
    ])


def corrupt(path: Path) -> Path:
    """A file with the right suffix and garbage content."""
    path.write_bytes(b"not really a media file\x00\x01\x02" * 8)
    return path
