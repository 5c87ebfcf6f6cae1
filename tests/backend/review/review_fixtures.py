"""Takes made from the real fixture footage, with known defects, for the review tests."""

from __future__ import annotations

from functools import lru_cache

import cv2
import numpy as np
from scail_fixtures import FOOTAGE

from backend.pipeline import media, pixels

SIZE = (256, 448)  # small enough to score quickly, real enough to have real motion


@lru_cache(maxsize=None)
def real_clip(name: str = "scail_001_driving.mp4") -> np.ndarray:
    """uint8 [65, 256, 448, 3]: a fixture clip at the test size (read-only: copy before changing it)."""
    info = media.probe_clip(FOOTAGE / name)
    frames = pixels.resize_cover_crop(media.read_frames(info, range(info.frame_count)), *SIZE)
    frames.setflags(write=False)
    return frames


@lru_cache(maxsize=None)
def face_crop(height: int = 96) -> np.ndarray:
    """The face of the scail_002 fixture (found by the cascade itself at 512p), `height` pixels high."""
    info = media.probe_clip(FOOTAGE / "scail_002_driving.mp4")
    frame = pixels.resize_cover_crop(media.read_frames(info, [10]), 512, 896)[0]
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + "haarcascade_frontalface_default.xml")
    x, y, w, h = max(cascade.detectMultiScale(cv2.cvtColor(frame, cv2.COLOR_RGB2GRAY), 1.1, 4, minSize=(40, 40)),
                     key=lambda r: r[2])
    pad = w // 4  # some head around the face, as a face sits in a frame
    crop = frame[max(0, y - pad): y + h + pad, max(0, x - pad): x + w + pad]
    return cv2.resize(crop, (round(crop.shape[1] * height / crop.shape[0]), height), interpolation=cv2.INTER_AREA)


def grating_background(period: int = 16, amplitude: float = 60.0) -> np.ndarray:
    """uint8 [H, W, 3] grey vertical stripes, 128 + A sin(2 pi x / period): a shift has a known error."""
    x = np.arange(SIZE[1])
    row = np.round(128 + amplitude * np.sin(2 * np.pi * x / period)).astype(np.uint8)
    return np.repeat(np.broadcast_to(row[None, :, None], (SIZE[0], SIZE[1], 1)), 3, axis=2).copy()
