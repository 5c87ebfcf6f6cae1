"""Clips whose truth is known, for the input checks: windows slid, joined, blurred over real frames,
and colour masks drawn with known boxes. Written as PNG sequences (lossless) at the model's rate, so
job frame k is file k."""

from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from scail_fixtures import REPO

from protocol import PALETTE, JobSpec

FOOTAGE = REPO / "tests" / "fixtures" / "footage"
HEIGHT, WIDTH = 448, 256  # portrait, the 512p tier's aspect (896 x 512)


def still(name: str = "mimicmotion_demo1.jpg") -> np.ndarray:
    """A real photograph, RGB, at least 3x the clip's size."""
    image = cv2.imread(str(FOOTAGE / name))[:, :, ::-1]
    scale = max(3 * HEIGHT / image.shape[0], 3 * WIDTH / image.shape[1], 1.0)
    return cv2.resize(image, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC)


def window(image: np.ndarray, x: float, y: float, zoom: float = 1.0) -> np.ndarray:
    """The clip-sized view of `image` whose top-left corner is at (x, y) pixels, `zoom` times magnified."""
    h, w = round(HEIGHT / zoom), round(WIDTH / zoom)
    x, y = int(round(x)), int(round(y))
    return cv2.resize(np.ascontiguousarray(image[y:y + h, x:x + w]), (WIDTH, HEIGHT), interpolation=cv2.INTER_AREA)


def steady(image: np.ndarray, count: int, seed: int = 0) -> list[np.ndarray]:
    """A still camera: the same window with a little sensor noise (never bit-identical frames)."""
    rng = np.random.default_rng(seed)
    base = window(image, image.shape[1] // 3, image.shape[0] // 4).astype(np.int16)
    return [np.clip(base + rng.integers(-2, 3, base.shape), 0, 255).astype(np.uint8) for _ in range(count)]


def write_sequence(folder: Path, frames, start: int = 0, step: int = 1) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    for k, frame in enumerate(frames):
        cv2.imwrite(str(folder / f"frame_{start + k * step:04d}.png"), np.ascontiguousarray(frame[:, :, ::-1]))
    return folder


def write_reference(path: Path, image: np.ndarray) -> Path:
    cv2.imwrite(str(path), np.ascontiguousarray(image[:, :, ::-1]))
    return path


def mask_frame(boxes: dict[int, tuple[int, int, int, int]], background=(0, 0, 0),
               size: tuple[int, int] = (HEIGHT, WIDTH)) -> np.ndarray:
    """A colour mask: each identity's box (x0, y0, x1, y1) painted in its palette colour, in order."""
    frame = np.empty((*size, 3), np.uint8)
    frame[...] = background
    for identity, (x0, y0, x1, y1) in boxes.items():
        frame[y0:y1, x0:x1] = PALETTE[identity - 1]
    return frame


def spec(tmp: Path, frames, *, masks=None, reference_boxes=None, mode="animate", **fields) -> JobSpec:
    """A job over `frames` (a PNG sequence at 16 fps), with driving `masks` (a list of box dicts) and a
    reference mask of `reference_boxes` when given."""
    driving = write_sequence(tmp / "driving", frames)
    reference = write_reference(tmp / "reference.png", frames[0])
    job = dict(driving=str(driving), reference=str(reference), driving_fps=fields.pop("driving_fps", 16.0), mode=mode)
    driving_bg, reference_bg = ((0, 0, 0), (255, 255, 255)) if mode == "animate" else ((255, 255, 255), (0, 0, 0))
    if masks is not None:
        job["driving_mask"] = str(write_sequence(tmp / "masks", [mask_frame(b, driving_bg) for b in masks]))
    if reference_boxes is not None:
        job["reference_mask"] = str(write_reference(tmp / "reference_mask.png", mask_frame(reference_boxes,
                                                                                          reference_bg)))
    return JobSpec(**job, **fields)


def named(report, name: str, identity: int | None = None):
    """The checks of `report` called `name` (of one identity when given)."""
    return [c for c in report.checks if c.name == name and (identity is None or c.identity == identity)]


def verdict(report, name: str, identity: int | None = None) -> str:
    """The worst verdict of the checks called `name`."""
    order = ("ok", "warn", "fail")
    found = named(report, name, identity)
    assert found, f"no {name} check in {[c.name for c in report.checks]}"
    return max((c.verdict for c in found), key=order.index)
