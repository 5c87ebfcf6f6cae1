"""Temporal stability: flicker and popping between consecutive take frames, and jumps at segment boundaries."""

from __future__ import annotations

import numpy as np

from protocol import Score

from ..flow import warp_back
from . import mean_of, rounded

WHAT = ("how well each take frame is predicted by the previous one moved along the optical flow "
        "(mean flow-warped error; 1 = no flicker or popping), and the error's jump at segment boundaries")
LIMITS = ("a take that barely moves is stable by this measure (motion fidelity catches a frozen take); "
          "occlusions and fast moves raise the error without being defects")
# The warped error (grey levels, 0-255) at which the score is 1/e: clean takes at 512p measure 2-6,
# a popped frame or a hard cut 20 and more.
ERROR_SCALE = 12.0


def warped_errors(frames: np.ndarray, flows: np.ndarray) -> list[float | None]:
    """Mean absolute error (grey levels) between frame k-1 and frame k warped back onto it; None for frame 0."""
    errors: list[float | None] = [None]
    for k in range(1, len(frames)):
        warped, inside = warp_back(frames[k], flows[k])
        diff = np.abs(warped.astype(np.float32) - frames[k - 1].astype(np.float32)).mean(axis=-1)
        errors.append(float(diff[inside].mean()) if inside.any() else None)
    return errors


def boundary_jumps(errors: list[float | None], starts: list[int]) -> list[dict]:
    """At each segment's first new frame: its error and how many times the take's median error it is."""
    measured = [e for e in errors if e is not None]
    median = float(np.median(measured)) if measured else 0.0
    jumps = []
    for frame in starts:
        if 0 < frame < len(errors) and errors[frame] is not None:
            jumps.append({"frame": frame, "error": rounded(errors[frame]),
                          "times_median": rounded(errors[frame] / max(median, 1e-3), 2)})
    return jumps


def measure(flows) -> Score:
    errors = warped_errors(flows.frames, flows.take_flows)
    per_frame = [None if e is None else rounded(np.exp(-e / ERROR_SCALE)) for e in errors]
    details = {"warped_error": [rounded(e, 2) for e in errors],
               "segment_boundaries": boundary_jumps(errors, flows.take.segment_starts)}
    return Score("temporal", mean_of(per_frame), WHAT, LIMITS, per_frame, details)
