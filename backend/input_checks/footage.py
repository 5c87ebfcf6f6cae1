"""What the footage itself says: shot cuts, camera motion, blur. Each takes the `Material` and returns checks.

The detectors are the field's: PySceneDetect's ContentDetector finds cuts, OpenCV's corner tracking
(Shi-Tomasi corners, pyramidal Lucas-Kanade) and RANSAC similarity fit measure the camera's motion,
and the variance of the Laplacian measures sharpness. What is ours is only how their numbers are
read against SCAIL-2's needs (`thresholds`).
"""

from __future__ import annotations

import cv2
import numpy as np
from scenedetect.common import FrameTimecode
from scenedetect.detectors import ContentDetector

from protocol import InputCheck

from .checklist import check, frames_text, passed, runs
from .material import Material
from .thresholds import LIMITS, MAX_CORNERS, ZOOM_STEP


def find_cuts(material: Material) -> list[int]:
    """The job frames that start a new shot (PySceneDetect's ContentDetector on the analysis frames)."""
    limit = LIMITS["cut"]
    # min_scene_len 1: a job's frames are already 16 fps, and a cut two frames in still breaks it.
    detector = ContentDetector(threshold=limit.warn, min_scene_len=1)
    fps = float(material.inputs.spec.model_fps)
    found: list[int] = []
    for k, frame in enumerate(material.frames):
        # PySceneDetect reads OpenCV's BGR order.
        found += [cut.frame_num for cut in detector.process_frame(FrameTimecode(k, fps=fps), frame[..., ::-1])]
    return [k for k in found if 0 < k < len(material.frames)]


def cuts(material: Material, found: list[int]) -> list[InputCheck]:
    """The cut check: fails at each cut, saying where to split the job."""
    if not found:
        return [passed("cut", "No cut between the job's frames: one continuous shot.")]
    pieces = [0, *found, len(material.frames)]
    parts = ", ".join(f"{a}-{b - 1}" for a, b in zip(pieces, pieces[1:]))
    return [check("cut", "cut", len(found), f"A shot cut at {frames_text(found)}: the take would morph one shot "
                  f"into the other; split the job at the cut (job frames {parts}).", found, verdict="fail",
                  unit="cuts")]


def _global_motion(grey: np.ndarray, keep: np.ndarray | None) -> np.ndarray:
    """[N, 3]: per job frame (from the previous one) dx, dy as shares of the width, and the scale
    change; row 0 is zeros. `keep`: uint8 [N, h, w], 255 where corners may be taken (not on a subject)."""
    n, height, width = grey.shape
    motion = np.zeros((n, 3), np.float64)
    motion[:, 2] = 1.0
    for k in range(1, n):
        mask = None if keep is None else keep[k - 1]
        corners = cv2.goodFeaturesToTrack(grey[k - 1], MAX_CORNERS, 0.01, 6, mask=mask)
        if corners is None or len(corners) < 8:
            continue
        moved, status, _err = cv2.calcOpticalFlowPyrLK(grey[k - 1], grey[k], corners, None, winSize=(21, 21),
                                                       maxLevel=3)
        good = status.ravel() == 1
        if good.sum() < 8:
            continue
        fit, _inliers = cv2.estimateAffinePartial2D(corners[good], moved[good], method=cv2.RANSAC,
                                                    ransacReprojThreshold=1.5)
        if fit is None:
            continue
        scale = float(np.hypot(fit[0, 0], fit[1, 0]))
        # The translation of the frame's centre (a zoom about the centre moves it not at all).
        centre = np.array([width / 2, height / 2, 1.0])
        dx, dy = fit @ centre - centre[:2]
        motion[k] = dx / width, dy / width, scale
    return motion


def camera(material: Material, cut_frames: list[int]) -> list[InputCheck]:
    """Fast pans, shake and zoom of the camera, each with the frames where it happens; the step into a cut's
    first frame is no camera motion (the cut check names it)."""
    keep = None
    if material.identities is not None:
        # Corners on the subjects move with them, not with the camera: take them elsewhere.
        subject = (material.identities > 0).astype(np.uint8)
        keep = np.where(np.stack([cv2.dilate(s, np.ones((9, 9), np.uint8)) for s in subject]) > 0, 0, 255)
        keep = keep.astype(np.uint8)
    motion = _global_motion(material.grey, keep)
    motion[cut_frames] = (0.0, 0.0, 1.0)
    speed = np.hypot(motion[:, 0], motion[:, 1])
    found = []
    pan = LIMITS["camera_pan"]
    fast = [k for k in range(len(speed)) if pan.verdict(speed[k]) != "ok"]
    if fast:
        worst = float(speed.max())
        found.append(check("camera", "camera_pan", worst,
                           f"A fast pan of up to {worst:.0%} of the frame per frame at {frames_text(fast)}: the "
                           "background smears and the subject can be lost; steady the shot or trim those frames.",
                           fast))
    if len(speed) >= 6:
        # Shake is the motion a 5-frame running median does not follow: the median keeps a pan's start
        # and end (a step), where a running mean would read them as shake.
        path = motion[:, :2]
        smooth = np.median(np.lib.stride_tricks.sliding_window_view(path, 5, axis=0), axis=-1)
        jitter = np.hypot(*(path[2:-2] - smooth).T)
        rms = float(np.sqrt(np.mean(jitter ** 2)))
        if LIMITS["camera_shake"].verdict(rms) != "ok":
            shaky = [k + 2 for k in np.flatnonzero(jitter > LIMITS["camera_shake"].warn)]
            found.append(check("camera", "camera_shake", rms,
                               f"The camera shakes ({rms:.1%} of the frame, RMS) at {frames_text(shaky)}: the take "
                               "copies the jitter; stabilise the footage first.", shaky))
    scales = np.cumprod(motion[:, 2])
    zoom = float(scales.max() / scales.min())
    if LIMITS["camera_zoom"].verdict(zoom) != "ok":
        zooming = [int(k) for k in np.flatnonzero(np.abs(np.log(motion[:, 2])) > ZOOM_STEP)]
        way = "in" if scales[-1] > scales[0] else "out"
        found.append(check("camera", "camera_zoom", zoom,
                           f"The camera zooms {way} {zoom:.2f}x over {frames_text(zooming)}: the character will "
                           "grow or shrink with it; use a shot without the zoom, or crop it out.", zooming))
    if not found:
        return [passed("camera", f"Steady camera: at most {float(speed.max()):.1%} of the frame per frame.",
                       round(float(speed.max()), 4), LIMITS["camera_pan"].unit)]
    return found


def sharpness(grey: np.ndarray, boxes: list[tuple[int, int, int, int] | None] | None = None) -> np.ndarray:
    """[N] variance of the Laplacian of each frame (inside its box when `boxes` gives one)."""
    values = np.empty(len(grey))
    for k, frame in enumerate(grey):
        box = boxes[k] if boxes is not None else None
        if box is not None:
            x0, y0, x1, y1 = box
            frame = frame[y0:y1, x0:x1]
        values[k] = cv2.Laplacian(frame, cv2.CV_64F).var() if frame.size >= 64 else np.nan
    return values


def _relative(values: np.ndarray, cut_frames: list[int]) -> np.ndarray:
    """Each value over the median of its own shot (shots split at `cut_frames`)."""
    out = np.ones_like(values)
    edges = [0, *cut_frames, len(values)]
    for a, b in zip(edges, edges[1:]):
        shot = values[a:b]
        median = float(np.nanmedian(shot)) if np.isfinite(shot).any() else 0.0
        if median > 0:
            out[a:b] = shot / median
    return out


def blur(material: Material, boxes: list | None = None, cut_frames: list[int] = ()) -> list[InputCheck]:
    """Frames far softer than their shot's own median (over the whole frame, and over the subjects' box)."""
    ratios = [_relative(sharpness(material.grey, where), list(cut_frames))
              for where in ([None] if boxes is None else [None, boxes])]
    ratio = np.nanmin(np.stack(ratios), axis=0)
    ratio = np.where(np.isfinite(ratio), ratio, 1.0)
    limit = LIMITS["blur"]
    soft = [k for k in range(len(ratio)) if limit.verdict(ratio[k]) != "ok"]
    if not soft:
        return [passed("blur", f"Sharp throughout: every frame at least {float(ratio.min()):.0%} of the clip's "
                       "median sharpness.", round(float(ratio.min()), 4), limit.unit)]
    stretches = len(runs(soft))
    return [check("blur", "blur", float(ratio.min()),
                  f"{len(soft)} blurred frame{'s' if len(soft) > 1 else ''} ({frames_text(soft)}, down to "
                  f"{float(ratio.min()):.0%} of the clip's median sharpness"
                  f"{f', in {stretches} stretches' if stretches > 1 else ''}): the model guesses the pose there; "
                  "use a faster shutter or trim them.", soft)]
