"""Contact sheets: a take's frames downscaled into one strip, as a data: URI (the page has no other files)."""

from __future__ import annotations

import base64
from pathlib import Path

import cv2
import numpy as np

from ...pipeline import media

THUMB_HEIGHT = 96
SHEET_FRAMES = 8
FLAG_RED = (220, 40, 40)


def sheet_frames(count: int, wanted: int = SHEET_FRAMES) -> list[int]:
    """Evenly spaced job frames, first and last included."""
    return sorted({int(round(k)) for k in np.linspace(0, count - 1, min(wanted, count))})


def contact_sheet(job_dir: Path, frame_files: list[str], flagged: set[int]) -> tuple[str, list[int]]:
    """(JPEG data: URI of the strip, the job frames it shows); a flagged frame gets a red bar under it,
    every thumbnail its frame number. A frame missing on disk is a grey tile."""
    picks = sheet_frames(len(frame_files))
    tiles = []
    for k in picks:
        try:
            rgb = media.read_image(Path(job_dir) / frame_files[k], what="take frame")[0]
            width = max(1, round(rgb.shape[1] * THUMB_HEIGHT / rgb.shape[0]))
            tile = cv2.resize(rgb, (width, THUMB_HEIGHT), interpolation=cv2.INTER_AREA)
        except media.MediaError:
            tile = np.full((THUMB_HEIGHT, THUMB_HEIGHT * 16 // 9, 3), 96, np.uint8)
        tile = cv2.copyMakeBorder(tile, 0, 6, 0, 2, cv2.BORDER_CONSTANT, value=(255, 255, 255))
        if k in flagged:
            tile[-6:, :-2] = FLAG_RED
        cv2.putText(tile, str(k), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (0, 0, 0), 3, cv2.LINE_AA)
        cv2.putText(tile, str(k), (4, 16), cv2.FONT_HERSHEY_SIMPLEX, 0.5, (255, 255, 255), 1, cv2.LINE_AA)
        tiles.append(tile)
    strip = np.concatenate(tiles, axis=1)
    ok, jpeg = cv2.imencode(".jpg", cv2.cvtColor(strip, cv2.COLOR_RGB2BGR), [cv2.IMWRITE_JPEG_QUALITY, 85])
    return "data:image/jpeg;base64," + base64.b64encode(jpeg.tobytes()).decode("ascii"), picks
