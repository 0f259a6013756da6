"""Write `calib/video_calib/`: a few short synthetic video clips with prompts, for video-capable VLMs and Omni
models (the kind of data the reference's `calibVideos` holds).

    python -m tools.make_video_calib [target_dir]     # default: calib/video_calib (run from the repository root)

Every clip is drawn here frame by frame (a bouncing disc, a rotating bar, a sliding colour wipe, a growing
square over a moving gradient) and encoded with PyAV, so the set is ours to ship. The last entry pairs a
clip with a still frame and a sound. Real deployments should calibrate on clips like their traffic.
"""

from __future__ import annotations

import json
import sys
from collections.abc import Callable
from pathlib import Path

import numpy as np

from tools.make_vlm_calib import REPO, synthetic_image, write_frames_mp4, write_image, write_wav

DEFAULT_TARGET = REPO / "calib" / "video_calib"
WIDTH, HEIGHT, FRAMES, FPS = 96, 64, 16, 8


def _grid() -> tuple[np.ndarray, np.ndarray]:
    y, x = np.mgrid[0:HEIGHT, 0:WIDTH].astype(np.float32)
    return x, y


def bouncing_disc(index: int) -> np.ndarray:
    x, y = _grid()
    frame = np.full((HEIGHT, WIDTH, 3), (20, 30, 60), dtype=np.uint8)
    height = abs(np.sin(index / FRAMES * 2 * np.pi))
    cx, cy = 12 + index * (WIDTH - 24) / (FRAMES - 1), HEIGHT - 10 - height * (HEIGHT - 24)
    frame[(x - cx) ** 2 + (y - cy) ** 2 < 64] = (240, 180, 40)
    frame[HEIGHT - 3:] = (90, 160, 90)
    return frame


def rotating_bar(index: int) -> np.ndarray:
    x, y = _grid()
    angle = index / FRAMES * np.pi
    along = (x - WIDTH / 2) * np.cos(angle) + (y - HEIGHT / 2) * np.sin(angle)
    across = -(x - WIDTH / 2) * np.sin(angle) + (y - HEIGHT / 2) * np.cos(angle)
    frame = np.full((HEIGHT, WIDTH, 3), 235, dtype=np.uint8)
    frame[(np.abs(along) < 26) & (np.abs(across) < 4)] = (200, 30, 30)
    return frame


def colour_wipe(index: int) -> np.ndarray:
    x, _ = _grid()
    edge = (index + 1) * WIDTH / FRAMES
    frame = np.empty((HEIGHT, WIDTH, 3), dtype=np.uint8)
    frame[:] = (30, 90, 200)
    frame[x < edge] = (250, 250, 250)
    return frame


def growing_square(index: int) -> np.ndarray:
    frame = np.roll(synthetic_image(WIDTH, HEIGHT, seed=5), shift=index * 3, axis=1)
    half = 4 + index * 2
    frame[HEIGHT // 2 - half // 2:HEIGHT // 2 + half // 2, WIDTH // 2 - half:WIDTH // 2 + half] = (20, 200, 120)
    return frame


CLIPS: dict[str, tuple[Callable[[int], np.ndarray], str]] = {
    "bouncing_disc.mp4": (bouncing_disc, "Describe how the ball moves in this clip."),
    "rotating_bar.mp4": (rotating_bar, "What is the red bar doing over time?"),
    "colour_wipe.mp4": (colour_wipe, "Explain what happens to the colours from the first frame to the last."),
    "growing_square.mp4": (growing_square, "What changes in the middle of the picture while the background moves?"),
}


def write_video_set(target: Path) -> Path:
    """The clips, a still frame and a sound, and index.jsonl tying them to prompts; returns the index path."""
    target.mkdir(parents=True, exist_ok=True)
    entries = []
    for name, (draw, prompt) in CLIPS.items():
        write_frames_mp4(target / name, (draw(i) for i in range(FRAMES)), FPS, WIDTH, HEIGHT)
        entries.append({"video": name, "text": prompt})
    write_image(target / "still.jpg", WIDTH, HEIGHT, seed=5)
    write_wav(target / "tone.wav", seconds=1.0, seed=2)
    entries.append({"image": "still.jpg", "audio": "tone.wav", "video": "growing_square.mp4",
                    "text": "Describe the still picture, the sound and the clip together."})
    index = target / "index.jsonl"
    index.write_text("".join(json.dumps(entry) + "\n" for entry in entries), encoding="utf-8")
    return index


if __name__ == "__main__":
    print(write_video_set(Path(sys.argv[1]) if len(sys.argv) > 1 else DEFAULT_TARGET))
