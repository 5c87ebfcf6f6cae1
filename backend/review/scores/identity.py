"""Identity stability: does the character inside its mask keep the reference's look, frame after frame?"""

from __future__ import annotations

from collections.abc import Callable

import cv2
import numpy as np

from protocol import Score

from ..flow import to_work_size
from . import mean_of, rounded

WHAT = ("similarity of each identity's colours inside its mask to the reference's inside its mask "
        "(hue-saturation histograms, 1 - Hellinger distance), per frame")
LIMITS = ("colour statistics only: a different face or costume in the same colours passes, and lighting "
          "changes lower it; masks come from the driving clip, so a character off its mask is measured "
          "off it")
NO_CLIP = "no CLIP embedding similarity: it needs real weights in memory (not the tiny profile, not `score`)"
HIST_BINS = [30, 32]  # hue, saturation
HIST_RANGES = [0, 180, 0, 256]
MIN_PIXELS = 64
CLIP_EVERY = 4  # frames between CLIP embeddings: the identity drifts slowly; the encoder is not free

# An image embedder: uint8 RGB crops -> float [N, D] embeddings (the model's CLIP vision tower).
Embedder = Callable[[list[np.ndarray]], np.ndarray]


def colour_histogram(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    hsv = cv2.cvtColor(rgb, cv2.COLOR_RGB2HSV)
    hist = cv2.calcHist([hsv], [0, 1], mask.astype(np.uint8), HIST_BINS, HIST_RANGES)
    return cv2.normalize(hist, None, 1.0, 0.0, cv2.NORM_L1)


def similarity(a: np.ndarray, b: np.ndarray) -> float:
    return float(1.0 - cv2.compareHist(a, b, cv2.HISTCMP_BHATTACHARYYA))


def bounding_crop(rgb: np.ndarray, mask: np.ndarray) -> np.ndarray:
    ys, xs = np.nonzero(mask)
    return rgb[ys.min(): ys.max() + 1, xs.min(): xs.max() + 1]


def measure(flows, embed: Embedder | None = None) -> Score:
    take = flows.take
    if take.reference is None:
        return Score("identity", None, WHAT, LIMITS + "; not measured: the reference was not found")
    reference = to_work_size(take.reference[None])[0]
    ref_masks = {i: to_work_size(m[None])[0] for i, m in take.reference_masks.items()}
    ref_hists = {i: colour_histogram(reference, m) for i, m in ref_masks.items() if m.sum() >= MIN_PIXELS}
    per_frame: list[float | None] = []
    for k, frame in enumerate(flows.frames):
        weighted, area = 0.0, 0
        for identity, mask in flows.masks.items():
            pixels = int(mask[k].sum())
            if identity in ref_hists and pixels >= MIN_PIXELS:
                weighted += similarity(colour_histogram(frame, mask[k]), ref_hists[identity]) * pixels
                area += pixels
        per_frame.append(rounded(weighted / area) if area else None)
    details = {"identities": sorted(ref_hists)}
    limits = LIMITS + "; " + NO_CLIP
    if embed is not None and ref_hists:
        try:
            details["clip_similarity"] = clip_similarities(flows, reference, ref_masks, embed)
            limits = LIMITS + "; CLIP similarity (every 4th frame, in details) uses the model's own CLIP vision tower"
        except Exception as exc:  # noqa: BLE001  (the encoder may have been freed or offloaded: colours still count)
            limits = LIMITS + f"; CLIP similarity failed ({type(exc).__name__}: {exc})".splitlines()[0]
    return Score("identity", mean_of(per_frame), WHAT, limits, per_frame, details)


def clip_similarities(flows, reference, ref_masks, embed: Embedder) -> dict[str, float | None]:
    """Job frame -> cosine similarity of the first identity's crop to the reference's, every CLIP_EVERY frames."""
    identity = min(i for i in ref_masks if ref_masks[i].any())
    crops, frames = [bounding_crop(reference, ref_masks[identity])], []
    mask = flows.masks.get(identity)
    for k in range(0, len(flows.frames), CLIP_EVERY):
        if mask is not None and mask[k].sum() >= MIN_PIXELS:
            crops.append(bounding_crop(flows.frames[k], mask[k]))
            frames.append(k)
    embeddings = np.asarray(embed(crops), np.float32)
    embeddings /= np.linalg.norm(embeddings, axis=-1, keepdims=True) + 1e-8
    return {str(k): rounded(float(embeddings[0] @ e)) for k, e in zip(frames, embeddings[1:])}
