"""Flags: the frames where a score falls far below the take's own median.

Judged against the take itself, not a fixed bar, because what is normal differs between shots (a
fast dance has more flow error than a talking head). The spread is the median absolute deviation
(robust to the very outliers being looked for), with a floor so a near-perfect take does not flag
its own rounding noise.
"""

from __future__ import annotations

import numpy as np

from protocol import Flag, Score

K = 4.0  # how many robust standard deviations below the median make a frame a flag
MAD_TO_SIGMA = 1.4826  # the MAD of a normal distribution times this is its standard deviation
SPREAD_FLOOR = 0.03  # in score units: differences smaller than this are never "far"


def threshold(values: list[float]) -> float:
    median = float(np.median(values))
    spread = max(MAD_TO_SIGMA * float(np.median(np.abs(np.asarray(values) - median))), SPREAD_FLOOR)
    return median - K * spread


def score_flags(score: Score) -> list[Flag]:
    """One Flag per frame of `score` below its threshold, with the reason in words."""
    measured = [v for v in score.per_frame if v is not None]
    if len(measured) < 3:
        return []
    limit, median = threshold(measured), float(np.median(measured))
    reasons = score.details.get("frame_reasons", {})
    flags = []
    for frame, value in enumerate(score.per_frame):
        if value is not None and value < limit:
            reason = reasons.get(str(frame)) or (f"{score.name} {value:.2f}, far below this take's median "
                                                 f"{median:.2f} (threshold {limit:.2f})")
            flags.append(Flag(frame, score.name, reason))
    return flags


def take_flags(scores: list[Score]) -> list[Flag]:
    """Every score's flags, in frame order."""
    return sorted((f for s in scores for f in score_flags(s)), key=lambda f: (f.frame, f.score))
