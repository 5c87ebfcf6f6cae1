"""Motion fidelity: does the take move as the driving clip does, inside each identity's mask?"""

from __future__ import annotations

import numpy as np

from protocol import Score

from . import mean_of, rounded

WHAT = ("agreement of the take's optical flow with the driving clip's inside each identity's mask "
        "(DIS flow; 1 = same direction and magnitude, 0 = unrelated or still)")
LIMITS = ("2D image motion only: a wrong limb moving the right way, or depth and rotation the flow cannot "
          "see, still agree; motion below half a pixel a frame counts as still; hands are too small to weigh")
# Motion under this many pixels a frame is flow noise, not motion: it keeps a still pair from
# dividing by nothing and makes a still take against a still driving clip agree.
NOISE_PX = 0.5
MIN_PIXELS = 64  # a mask smaller than this (in work pixels) says nothing about motion


def _length(flow: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("...c,...c->...", flow, flow))


def per_frame_agreement(take_flows: np.ndarray, driving_flows: np.ndarray, masks: dict[int, np.ndarray]) -> dict:
    """Flows [T, H, W, 2] and identity masks [T, H, W] -> per frame (index 0 is None): agreement
    1 - mean|f_take - f_driving| / (mean|f_take| + mean|f_driving| + noise) averaged over identities by
    area, the mean cosine where the driving moves, and the take's speed over the driving's."""
    take_speed, driving_speed = _length(take_flows), _length(driving_flows)
    error = _length(take_flows - driving_flows)
    cosine = np.einsum("...c,...c->...", take_flows, driving_flows) / (take_speed * driving_speed + 1e-6)
    moving = driving_speed > NOISE_PX
    out = {"agreement": [None], "direction_cosine": [None], "magnitude_ratio": [None]}
    for k in range(1, len(take_flows)):
        weighted = area = 0.0
        cosines, ratios = [], []
        for mask in masks.values():
            inside = mask[k] & mask[k - 1]
            pixels = int(inside.sum())
            if pixels < MIN_PIXELS:
                continue
            t, d = take_speed[k][inside].mean(), driving_speed[k][inside].mean()
            weighted += float(np.clip(1.0 - error[k][inside].mean() / (t + d + NOISE_PX), 0.0, 1.0)) * pixels
            area += pixels
            if (inside & moving[k]).any():
                cosines.append(float(cosine[k][inside & moving[k]].mean()))
            if d > NOISE_PX:
                ratios.append(float(t / d))
        out["agreement"].append(rounded(weighted / area) if area else None)
        out["direction_cosine"].append(rounded(float(np.mean(cosines))) if cosines else None)
        out["magnitude_ratio"].append(rounded(float(np.mean(ratios))) if ratios else None)
    return out


def measure(flows) -> Score:
    if flows.driving is None:
        return Score("motion", None, WHAT, LIMITS + "; not measured: the driving clip was not found")
    measured = per_frame_agreement(flows.take_flows, flows.driving_flows, flows.masks)
    per_frame = measured.pop("agreement")
    details = {**measured, "identities": sorted(flows.masks)}
    return Score("motion", mean_of(per_frame), WHAT, LIMITS, per_frame, details)
