"""Which tracked instances become SCAIL-2 identities, in which order, in which colours.

Pure functions over per-instance statistics: no model here. Identity 0 (blue) is the
leftmost kept instance by the centre x of its box in the first frame it appears in,
the same rule for the driving clip and the reference still, so identity i of one binds
to identity i of the other.
"""

from __future__ import annotations

import numpy as np

from protocol import MAX_IDENTITIES

from . import SegmentationError


def mask_box(mask: np.ndarray, threshold: float = 0.5) -> tuple[float, float, float, float] | None:
    """Pixel box (x0, y0, x1, y1) of coverage >= threshold in [H, W], x1/y1 exclusive; None when empty."""
    on = np.asarray(mask) >= threshold
    cols, rows = np.flatnonzero(on.any(axis=0)), np.flatnonzero(on.any(axis=1))
    if cols.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


def left_to_right(boxes: np.ndarray) -> list[int]:
    """Indices of `boxes` [N, 4] (x0, y0, x1, y1) by box centre x, left first; boxes with NaN go last."""
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    centres = (boxes[:, 0] + boxes[:, 2]) / 2
    keys = [(np.isnan(c), 0.0 if np.isnan(c) else c, i) for i, c in enumerate(centres)]
    return [i for _, _, i in sorted(keys)]


def check_identity_count(count: int) -> None:
    if not 1 <= count <= MAX_IDENTITIES:
        raise SegmentationError(f"SCAIL-2 binds 1 to {MAX_IDENTITIES} identities, {count} were asked for")


def select_instances(areas: np.ndarray, max_identities: int = MAX_IDENTITIES,
                     pick: list[int] | None = None) -> tuple[list[int], list[str]]:
    """Which of N instances to keep (ascending indices), and warnings.

    areas: [N] mean coverage of each instance over the clip. `pick` (instance indices
    chosen by the caller) wins; otherwise the `max_identities` largest are kept.
    """
    areas = np.asarray(areas, np.float64).reshape(-1)
    count = int(areas.size)
    warnings: list[str] = []
    if pick is not None:
        pick = [int(i) for i in pick]
        check_identity_count(len(pick))
        if len(set(pick)) != len(pick):
            raise SegmentationError(f"picked instances repeat: {pick}")
        bad = [i for i in pick if not 0 <= i < count]
        if bad:
            raise SegmentationError(f"picked instances {bad} do not exist: {count} instance(s) were found")
        return sorted(pick), warnings
    check_identity_count(max_identities)
    keep = sorted(range(count), key=lambda i: (-areas[i], i))[:max_identities]
    if count > max_identities:
        warnings.append(f"{count} instances found; kept the {max_identities} largest by mean area")
    return sorted(keep), warnings


def arrange_identities(areas: np.ndarray, boxes: np.ndarray, max_identities: int = MAX_IDENTITIES,
                       pick: list[int] | None = None) -> tuple[list[int], list[str]]:
    """Instance index of each identity (identity 0 first = leftmost kept), and warnings.

    areas [N] as for `select_instances`; boxes [N, 4] first-appearance boxes.
    """
    boxes = np.asarray(boxes, np.float32).reshape(-1, 4)
    keep, warnings = select_instances(areas, max_identities, pick)
    return [keep[i] for i in left_to_right(boxes[keep])], warnings


def paint(coverage: np.ndarray, mode: str, for_reference: bool = False) -> np.ndarray:
    """Identity-ordered coverage [M, ..., H, W] -> uint8 RGB [..., H, W, 3] on the mode's background."""
    import torch

    from ..pipeline.masks import paint_identities

    return paint_identities(torch.from_numpy(np.ascontiguousarray(coverage, np.float32)), mode,
                            for_reference=for_reference).numpy()
