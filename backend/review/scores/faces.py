"""Faces: frames where the take loses a face the driving clip shows, or shows one too many.

OpenCV's Haar cascade (shipped in `cv2.data`, no download) counts frontal faces in the driving clip and
in the take. Per frame it is noisy (for one dancer, 0, 1 or 2 faces from frame to frame on the
fixture clips), so each side is judged against the other's running extremes over SMOOTH frames, and only a
disagreement that lasts counts: a face lost or doubled.
"""

from __future__ import annotations

import cv2
import numpy as np

from protocol import Score

from . import mean_of

WHAT = ("whether the take shows the faces the driving clip shows, frame by frame (Haar frontal-face "
        "counts, smoothed; 1 = same count, 0 = a face lost or doubled for several frames)")
LIMITS = ("frontal faces only (profiles and small or blurred faces go unseen in both), counts not "
          "identities (a swapped face passes), looked for only around the characters' masks (a face "
          "outside every identity's mask is not counted), a face lost or doubled for less than 8 frames "
          "(half a second at 16 fps) is not named; hands are not checked by anything here yet")
CASCADE = "haarcascade_frontalface_default.xml"
# Tuned on the fixture clips (tests/fixtures/footage, resized to 512p): faces there are 50-90 px
# (scail_001, full body) and 150-200 px (scail_002, half body). At 320 px (0.625x) with these
# settings the detector finds both; at 256 px it loses scail_001's often. The windows below are
# the smallest that name nothing on either clip blurred and brightened (a take without a defect:
# tests/backend/review/test_scores.py); 5 frames named a false loss on scail_001.
DETECT_SHORT_SIDE = 320
MIN_FACE = 20  # pixels at detection size
MIN_NEIGHBOURS = 4
# Detection is this score's cost (driving and take, every frame). Detecting every other frame and
# holding the count was tried: it named a false "doubled" run on scail_001 at 256 px.
SMOOTH = 7  # frames in the running windows over each count sequence
BOX_MARGIN_AT_DETECTION = 2 * MIN_FACE  # pixels around the characters' box, at detection size
PERSIST = 2  # frames a disagreement must last, inside the windows, to count


def face_counts(frames: np.ndarray, boxes: list[tuple[int, int, int, int] | None] | None = None) -> list[int]:
    """uint8 RGB [N, H, W, 3] -> frontal faces found in each frame, looked for inside `boxes[k]`
    ((top, left, bottom, right) in frame pixels; None: nothing to look at) or in the whole frame."""
    cascade = cv2.CascadeClassifier(cv2.data.haarcascades + CASCADE)
    scale = min(1.0, DETECT_SHORT_SIDE / min(frames.shape[1:3]))
    counts: list[int] = []
    for k, frame in enumerate(frames):
        box = (0, 0, *frame.shape[:2]) if boxes is None else boxes[k]
        if box is None:
            counts.append(0)
            continue
        top, left, bottom, right = box
        grey = cv2.cvtColor(np.ascontiguousarray(frame[top:bottom, left:right]), cv2.COLOR_RGB2GRAY)
        if scale < 1.0:
            grey = cv2.resize(grey, None, fx=scale, fy=scale, interpolation=cv2.INTER_AREA)
        if min(grey.shape) < MIN_FACE:
            counts.append(0)
            continue
        found = cascade.detectMultiScale(grey, scaleFactor=1.1, minNeighbors=MIN_NEIGHBOURS, minSize=(MIN_FACE,) * 2)
        counts.append(len(found))
    return counts


def character_boxes(masks: np.ndarray, margin_px: int) -> list[tuple[int, int, int, int] | None]:
    """bool [N, H, W] (every identity's mask) -> each frame's box around the characters, grown by
    `margin_px` on every side (clipped to the frame); None where no identity shows."""
    height, width = masks.shape[1:3]
    rows, cols = masks.any(axis=2), masks.any(axis=1)
    boxes: list[tuple[int, int, int, int] | None] = []
    for row, col in zip(rows, cols):
        if not row.any():
            boxes.append(None)
            continue
        top, bottom = np.flatnonzero(row)[[0, -1]]
        left, right = np.flatnonzero(col)[[0, -1]]
        boxes.append((max(0, top - margin_px), max(0, left - margin_px),
                      min(height, bottom + 1 + margin_px), min(width, right + 1 + margin_px)))
    return boxes


def _margin(size: tuple[int, int]) -> int:
    """Pixels the characters' box grows by: a face at a mask's edge (hair, a turned head) stays whole."""
    scale = min(1.0, DETECT_SHORT_SIDE / min(size))
    return int(round(BOX_MARGIN_AT_DETECTION / scale))


def _running(values: np.ndarray, reduce) -> np.ndarray:
    """`reduce` over a window of SMOOTH frames centred on each frame (shrinking at the ends)."""
    half = SMOOTH // 2
    return np.array([reduce(values[max(0, k - half): k + half + 1]) for k in range(len(values))])


def smoothed(counts: list[int]) -> np.ndarray:
    """Running median of a count sequence."""
    return _running(np.asarray(counts), np.median).round()


def disagreements(driving: list[int], take: list[int]) -> list[tuple[int, int, str]]:
    """(first frame, end frame, "lost" or "doubled") for every lasting disagreement.

    Lost: even the take's most generous count around a frame is below the driving's typical one;
    doubled: the take's typical count is above the driving's most generous. Judging each side by
    the other's extreme is what keeps the detector's flicker out; a run found so is shorter than
    the defect by half a window at each end, so it is grown back by as much.
    """
    driving, take = np.asarray(driving), np.asarray(take)
    lost = _running(take, np.max) < smoothed(driving)
    doubled = smoothed(take) > _running(driving, np.max)
    half, runs = SMOOTH // 2, []
    for kind, wrong in (("lost", lost), ("doubled", doubled)):
        k = 0
        while k < len(wrong):
            if not wrong[k]:
                k += 1
                continue
            end = k
            while end < len(wrong) and wrong[end]:
                end += 1
            if end - k >= PERSIST:
                runs.append((max(0, k - half), min(len(wrong), end + half), kind))
            k = end
    return sorted(runs)


def measure(flows) -> Score:
    take = flows.take
    if take.driving is None:
        return Score("faces", None, WHAT, LIMITS + "; not measured: the driving clip was not found")
    character = flows.character
    # Only where the characters are: a real job's masks leave most of a frame out, and the detector's
    # time goes with the area it scans. A take without masks is one whole-frame identity (Take).
    boxes = None if character.all() else character_boxes(character, _margin(character.shape[1:3]))
    driving_counts = flows.of_driving(("faces", None if boxes is None else tuple(boxes)),
                                      lambda: face_counts(flows.driving, boxes))
    take_counts = face_counts(flows.frames, boxes)
    seen = np.maximum(smoothed(driving_counts), smoothed(take_counts)) > 0
    per_frame: list[float | None] = [1.0 if s else None for s in seen]
    reasons: dict[str, str] = {}
    for first, end, kind in disagreements(driving_counts, take_counts):
        for k in range(first, end):
            per_frame[k] = 0.0
            reasons[str(k)] = (f"face {kind}: the driving clip shows {int(smoothed(driving_counts)[k])}, the take "
                               f"{int(smoothed(take_counts)[k])} (frames {first}-{end - 1})")
    details = {"driving_counts": driving_counts, "take_counts": take_counts, "frame_reasons": reasons}
    limits = LIMITS if any(seen) else LIMITS + "; no frontal face was found in the driving clip or the take"
    return Score("faces", mean_of(per_frame), WHAT, limits, per_frame, details)
