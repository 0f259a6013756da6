"""Write a small synthetic multimodal calibration set (images, a wav, an mp4, index.jsonl).

    python tools/make_vlm_calib.py [target_dir]     # default: calib/vlm_calib

The content is synthetic on purpose (gradients and shapes, a chord, a moving square): it is ours to ship,
exercises every decoder of the VLM service, and is enough for min/max activation statistics of the smoke
runs. Real deployments should calibrate on images, audio and video like their traffic.
Tests import the writers to build sets (and broken files) on the fly.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Iterable
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
DEFAULT_TARGET = REPO / "calib" / "vlm_calib"


def synthetic_image(width: int, height: int, seed: int) -> np.ndarray:
    """An RGB uint8 picture: a colour gradient with a filled disc and a bar, placed by `seed`."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:height, 0:width].astype(np.float32)
    image = np.stack([x / width, y / height, 0.5 + 0.5 * np.sin((x + y) / 9.0 + seed)], axis=-1) * 255.0
    cx, cy, r = rng.uniform(0.3, 0.7) * width, rng.uniform(0.3, 0.7) * height, min(width, height) / 5
    image[(x - cx) ** 2 + (y - cy) ** 2 < r**2] = rng.integers(0, 256, 3)
    top = int(rng.uniform(0.05, 0.8) * height)
    image[top:top + max(2, height // 12), width // 8:width - width // 8] = rng.integers(0, 256, 3)
    return image.clip(0, 255).astype(np.uint8)


def write_image(path: Path, width: int = 96, height: int = 72, seed: int = 0) -> Path:
    from PIL import Image

    Image.fromarray(synthetic_image(width, height, seed)).save(path)
    return path


def write_wav(path: Path, seconds: float = 1.0, rate: int = 16000, seed: int = 0) -> Path:
    """A mono chord with a little noise, 16-bit PCM."""
    import soundfile

    t = np.arange(int(seconds * rate)) / rate
    rng = np.random.default_rng(seed)
    signal = sum(np.sin(2 * np.pi * f * t) for f in (220.0 * (1 + seed % 3), 277.2, 329.6)) / 4
    signal = signal + 0.02 * rng.standard_normal(t.shape)
    soundfile.write(str(path), signal.astype(np.float32), rate, subtype="PCM_16")
    return path


def write_frames_mp4(path: Path, frames: Iterable[np.ndarray], fps: int, width: int, height: int) -> Path:
    """An H.264 (or MPEG-4 part 2 if no H.264 encoder is built in) clip of RGB uint8 `[height, width, 3]` frames."""
    import av

    with av.open(str(path), mode="w") as container:
        codec = "libx264" if "libx264" in av.codecs_available else "mpeg4"
        stream = container.add_stream(codec, rate=fps)
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for frame in frames:
            for packet in stream.encode(av.VideoFrame.from_ndarray(frame, format="rgb24")):
                container.mux(packet)
        for packet in stream.encode():
            container.mux(packet)
    return path


def write_mp4(path: Path, frames: int = 8, fps: int = 4, width: int = 64, height: int = 64, seed: int = 0) -> Path:
    """A clip of a white square moving over a gradient."""
    base = synthetic_image(width, height, seed)

    def frame(index: int) -> np.ndarray:
        image = base.copy()
        left = (index * width // frames) % (width - 16)
        image[24:40, left:left + 16] = (255, 255, 255)
        return image

    return write_frames_mp4(path, (frame(index) for index in range(frames)), fps, width, height)


def write_calib_set(target: Path) -> Path:
    """Three images, a wav, an mp4 and the index.jsonl tying them to prompts; returns the index path."""
    target.mkdir(parents=True, exist_ok=True)
    for seed, name in enumerate(("scene_0.jpg", "scene_1.png", "scene_2.jpg")):
        write_image(target / name, seed=seed)
    write_wav(target / "chord.wav")
    write_mp4(target / "square.mp4")
    entries = [
        {"image": "scene_0.jpg", "text": "Describe this image in detail."},
        {"image": "scene_1.png", "text": "What shapes and colours can you see?"},
        {"image": "scene_2.jpg"},
        {"video": "square.mp4", "text": "What moves in this video?"},
        {"image": "scene_0.jpg", "audio": "chord.wav", "video": "square.mp4",
         "text": "Describe the picture, the sound and the video."},
    ]
    index = target / "index.jsonl"
    index.write_text("".join(json.dumps(e) + "\n" for e in entries), encoding="utf-8")
    return index


if __name__ == "__main__":
    destination = Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TARGET
    print(write_calib_set(destination))
