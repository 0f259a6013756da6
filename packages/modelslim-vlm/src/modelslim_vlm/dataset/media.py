"""Decoding a sample's media files into what a transformers processor takes.

Images through pillow (RGB), audio through soundfile (mono float32, resampled with soxr when the file's
rate differs from the processor's: soxr is a small, maintained wrapper of the SoX resampler with
band-limited, high-quality filters and no dependency beyond numpy), video through PyAV (every frame as
RGB plus its timing), so the processor gets frames and metadata and samples them itself; its own path
decoding would need torchcodec and an FFmpeg install.
Every file is decoded before any model work: a corrupt or unreadable file is an error naming it.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from modelslim_core.errors import DatasetError
from modelslim_vlm.dataset.sample import MediaSample


@dataclass
class DecodedVideo:
    """All frames (T, H, W, 3) uint8 and the stream's frame rate."""

    frames: np.ndarray
    fps: float

    def metadata(self):
        """The transformers VideoMetadata of the full decoded clip (the processor samples from it)."""
        from transformers.video_utils import VideoMetadata

        count, height, width = self.frames.shape[:3]
        return VideoMetadata(total_num_frames=count, fps=self.fps, width=width, height=height,
                             duration=count / self.fps, video_backend="pyav", frames_indices=list(range(count)))


@dataclass
class DecodedSample:
    """A sample with its media in memory; `source` keeps the paths for messages."""

    source: MediaSample
    image: object | None = None  # PIL.Image.Image
    audio: np.ndarray | None = None  # mono float32 at the processor's sampling rate
    video: DecodedVideo | None = None

    @property
    def text(self) -> str:
        return self.source.text


def _unreadable(path: Path, what: str, exc: BaseException) -> DatasetError:
    return DatasetError(f"{path} cannot be decoded as {what}: {exc}.",
                        "replace the file with a valid one or remove its entry from the calibration set.")


def decode_image(path: Path):
    from PIL import Image

    try:
        with Image.open(path) as image:
            image.load()
            return image.convert("RGB")
    except Exception as exc:  # pillow raises OSError, SyntaxError, ValueError... for broken files
        raise _unreadable(path, "an image", exc) from None


def decode_audio(path: Path, sampling_rate: int) -> np.ndarray:
    import soundfile
    import soxr

    try:
        data, rate = soundfile.read(str(path), dtype="float32", always_2d=True)
    except Exception as exc:  # LibsndfileError, RuntimeError, TypeError for unknown formats
        raise _unreadable(path, "audio", exc) from None
    if data.size == 0:
        raise _unreadable(path, "audio", ValueError("it holds no samples"))
    mono = data.mean(axis=1)
    if rate != sampling_rate:
        mono = soxr.resample(mono, rate, sampling_rate, quality="HQ")
    return np.ascontiguousarray(mono, dtype=np.float32)


def decode_video(path: Path) -> DecodedVideo:
    import av

    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError("it has no video stream")
            stream = container.streams.video[0]
            frames = [frame.to_ndarray(format="rgb24") for frame in container.decode(stream)]
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
    except Exception as exc:  # av.error.FFmpegError subclasses, plus our own checks
        raise _unreadable(path, "video", exc) from None
    if not frames:
        raise _unreadable(path, "video", ValueError("it holds no frames"))
    return DecodedVideo(frames=np.stack(frames), fps=float(rate) if rate else 24.0)


def decode_sample(sample: MediaSample, sampling_rate: int | None) -> DecodedSample:
    """Decode every media file of `sample`; audio needs the processor's `sampling_rate`."""
    audio = None
    if sample.audio is not None:
        if sampling_rate is None:
            raise DatasetError(f"{sample.where} has audio, but this model's processor takes no audio.",
                               "drop the audio field for this model.")
        audio = decode_audio(sample.audio, sampling_rate)
    return DecodedSample(
        source=sample,
        image=decode_image(sample.image) if sample.image is not None else None,
        audio=audio,
        video=decode_video(sample.video) if sample.video is not None else None,
    )
