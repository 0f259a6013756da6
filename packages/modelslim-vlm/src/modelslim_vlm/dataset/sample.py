"""One calibration sample of the VLM service: a text and optional image, audio and video files."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png")
AUDIO_SUFFIXES = (".wav", ".mp3")
VIDEO_SUFFIXES = (".mp4",)
#: Index-entry field -> the file suffixes it accepts.
MEDIA_FIELDS: dict[str, tuple[str, ...]] = {"image": IMAGE_SUFFIXES, "audio": AUDIO_SUFFIXES, "video": VIDEO_SUFFIXES}

DEFAULT_TEXT = "Describe this image in detail."


@dataclass(frozen=True)
class MediaSample:
    """Paths are absolute and were checked to exist with an accepted suffix; `where` names the entry for errors."""

    text: str
    image: Path | None = None
    audio: Path | None = None
    video: Path | None = None
    where: str = ""

    @property
    def modalities(self) -> tuple[str, ...]:
        return tuple(name for name in MEDIA_FIELDS if getattr(self, name) is not None)
