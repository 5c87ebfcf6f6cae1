"""Background coherence: replacement keeps the driving footage's background; animation keeps its own still."""

from __future__ import annotations

import cv2
import numpy as np

from protocol import Score

from . import mean_of, rounded

WHAT_REPLACE = ("the take against the driving footage outside the character masks: SSIM (the value) and PSNR "
                "(in details), per frame")
WHAT_ANIMATE = "the background's stability over time: SSIM between consecutive take frames outside the masks"
LIMITS = ("masks are the driving clip's, grown by a margin: a character drawn beyond it (hair, props, "
          "shadows) counts as background damage; SSIM is computed on grey levels")
LIMITS_ANIMATE = "; a background meant to move (camera moves in the prompt) reads as unstable"
# Pixels around each mask that are not judged: the generated silhouette never matches the mask exactly.
MASK_MARGIN = 15
MIN_PIXELS = 256
# SSIM's constants for 8-bit images (Wang et al. 2004): K1 = 0.01, K2 = 0.03, L = 255.
C1, C2 = (0.01 * 255) ** 2, (0.03 * 255) ** 2


def ssim_map(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """Per-pixel SSIM of two grey uint8 images (11x11 Gaussian window, sigma 1.5). Written here because
    OpenCV's main modules have no SSIM (only contrib's quality module) and scikit-image is not a dependency."""
    a, b = a.astype(np.float64), b.astype(np.float64)

    def blur(x):
        return cv2.GaussianBlur(x, (11, 11), 1.5)

    mu_a, mu_b = blur(a), blur(b)
    var_a, var_b = blur(a * a) - mu_a ** 2, blur(b * b) - mu_b ** 2
    cov = blur(a * b) - mu_a * mu_b
    return ((2 * mu_a * mu_b + C1) * (2 * cov + C2)) / ((mu_a ** 2 + mu_b ** 2 + C1) * (var_a + var_b + C2))


def psnr(a: np.ndarray, b: np.ndarray, where: np.ndarray) -> float:
    mse = float(np.mean((a[where].astype(np.float64) - b[where].astype(np.float64)) ** 2))
    return 100.0 if mse == 0 else 10.0 * np.log10(255.0 ** 2 / mse)


def background_of(character: np.ndarray) -> np.ndarray:
    """bool [H, W]: pixels farther than MASK_MARGIN from the character."""
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (2 * MASK_MARGIN + 1, 2 * MASK_MARGIN + 1))
    return cv2.dilate(character.astype(np.uint8), kernel) == 0


def measure(flows) -> Score:
    take = flows.take
    grey = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in flows.frames]
    character = flows.character
    per_frame: list[float | None] = []
    if take.mode == "replace":
        if flows.driving is None:
            return Score("background", None, WHAT_REPLACE, LIMITS + "; not measured: the driving clip was not found")
        driving = [cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in flows.driving]
        psnrs: list[float | None] = []
        for k in range(len(grey)):
            where = background_of(character[k])
            enough = where.sum() >= MIN_PIXELS
            per_frame.append(rounded(np.clip(ssim_map(grey[k], driving[k])[where].mean(), 0, 1)) if enough else None)
            psnrs.append(rounded(psnr(grey[k], driving[k], where), 2) if enough else None)
        return Score("background", mean_of(per_frame), WHAT_REPLACE, LIMITS + _unmeasured(per_frame), per_frame,
                     {"psnr_db": psnrs})
    per_frame.append(None)
    for k in range(1, len(grey)):
        where = background_of(character[k] | character[k - 1])
        enough = where.sum() >= MIN_PIXELS
        per_frame.append(rounded(np.clip(ssim_map(grey[k], grey[k - 1])[where].mean(), 0, 1)) if enough else None)
    return Score("background", mean_of(per_frame), WHAT_ANIMATE, LIMITS + LIMITS_ANIMATE + _unmeasured(per_frame),
                 per_frame)


def _unmeasured(per_frame: list[float | None]) -> str:
    if any(v is not None for v in per_frame):
        return ""
    return "; not measured: the masks leave no background (no driving mask: the whole frame is the character)"
