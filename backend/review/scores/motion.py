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
MIN_PIXELS = 64  # a mask with fewer sampled pixels than this says nothing about motion
SAMPLE_STEP = 2


def _length(flow: np.ndarray) -> np.ndarray:
    return np.sqrt(np.einsum("...c,...c->...", flow, flow))


def per_frame_agreement(take_flows: np.ndarray, driving_flows: np.ndarray, masks: dict[int, np.ndarray]) -> dict:
    """Flows [T, H, W, 2] and identity masks [T, H, W] -> per frame (index 0 is None): agreement
    1 - mean|f_take - f_driving| / (mean|f_take| + mean|f_driving| + noise) averaged over identities by
    area, the mean cosine where the driving moves, and the take's speed over the driving's."""
    out = {"agreement": [None], "direction_cosine": [None], "magnitude_ratio": [None]}
    for k in range(1, len(take_flows)):
        take, driving = take_flows[k], driving_flows[k]
        take_speed, driving_speed = _length(take), _length(driving)
        error = _length(take - driving)
        moving = driving_speed > NOISE_PX
        weighted = area = 0.0
        cosines, ratios = [], []
        for mask in masks.values():
            inside = mask[k] & mask[k - 1]
            pixels = int(inside.sum())
            if pixels < MIN_PIXELS:
                continue
            t, d = take_speed[inside].mean(), driving_speed[inside].mean()
            weighted += float(np.clip(1.0 - error[inside].mean() / (t + d + NOISE_PX), 0.0, 1.0)) * pixels
            area += pixels
            both = inside & moving
            if both.any():
                dot = np.einsum("pc,pc->p", take[both], driving[both])
                cosines.append(float(np.mean(dot / (take_speed[both] * driving_speed[both] + 1e-6))))
            if d > NOISE_PX:
                ratios.append(float(t / d))
        out["agreement"].append(rounded(weighted / area) if area else None)
        out["direction_cosine"].append(rounded(float(np.mean(cosines))) if cosines else None)
        out["magnitude_ratio"].append(rounded(float(np.mean(ratios))) if ratios else None)
    return out


def measure(flows) -> Score:
    if flows.driving is None:
        return Score("motion", None, WHAT, LIMITS + "; not measured: the driving clip was not found")
    # Every other pixel each way: dense flow is smooth at that scale, and it is 4x less to compare.
    step = SAMPLE_STEP
    measured = per_frame_agreement(flows.take_flows[:, ::step, ::step], flows.driving_flows[:, ::step, ::step],
                                   {i: m[:, ::step, ::step] for i, m in flows.masks.items()})
    per_frame = measured.pop("agreement")
    details = {**measured, "identities": sorted(flows.masks)}
    return Score("motion", mean_of(per_frame), WHAT, LIMITS, per_frame, details)
