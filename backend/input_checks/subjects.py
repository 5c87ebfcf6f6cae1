"""What the masks say: each identity's size and presence in the driving mask, overlaps between identities,
subjects against the reference's identities, and the reference's framing against the driving subject.

Every number is taken on ALL the job's frames of the driving mask (identity maps of `material`), not on a
sample: a subject that walks in at frame 60 counts. Without a driving mask every frame is identity 1 (the
documented fallback) and only the identity count is checked.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from protocol import PALETTE_NAMES, InputCheck

from .checklist import check, frames_text, passed
from .material import Material
from .thresholds import LIMITS, MIN_SUBJECT_PIXELS

# An identity whose mask covers (nearly) the whole reference is the fallback of a reference without a mask.
_WHOLE_FRAME = 0.98


def name(identity: int) -> str:
    return f"identity {identity} ({PALETTE_NAMES[identity - 1]})"


@dataclass
class Track:
    """One identity through the job's frames. Boxes are (x0, y0, x1, y1) in analysis pixels."""

    identity: int
    pixels: np.ndarray  # [N] mask pixels per frame
    boxes: list  # [N] box, or None where it is missing

    @property
    def present(self) -> np.ndarray:
        return self.pixels >= MIN_SUBJECT_PIXELS

    def heights(self, frame_height: int) -> np.ndarray:
        return np.array([(b[3] - b[1]) / frame_height if b else np.nan for b in self.boxes])


def _boxes(on: np.ndarray) -> list:
    """[N, h, w] bool -> per frame the box of its True pixels, or None."""
    rows, cols = on.any(axis=2), on.any(axis=1)
    out = []
    for r, c in zip(rows, cols):
        if not r.any():
            out.append(None)
            continue
        y = np.flatnonzero(r)
        x = np.flatnonzero(c)
        out.append((int(x[0]), int(y[0]), int(x[-1]) + 1, int(y[-1]) + 1))
    return out


def tracks(identities: np.ndarray) -> dict[int, Track]:
    """The identities that are present in at least one frame, with their pixels and boxes per frame."""
    found = {}
    for identity in np.unique(identities):
        if identity == 0:
            continue
        on = identities == identity
        track = Track(int(identity), on.sum(axis=(1, 2)), [])
        if track.present.any():
            track.boxes = [box if ok else None for box, ok in zip(_boxes(on), track.present)]
            found[int(identity)] = track
    return found


def reference_identities(material: Material) -> set[int]:
    found = set()
    for view in material.reference:
        found |= {int(i) for i, n in zip(*np.unique(view, return_counts=True)) if i and n >= MIN_SUBJECT_PIXELS}
    return found


def subject_boxes(found: dict[int, Track], frames: int) -> list:
    """Per frame the box around every subject (for the blur of the subjects), or None."""
    out = []
    for k in range(frames):
        boxes = [t.boxes[k] for t in found.values() if t.boxes[k] is not None]
        out.append(None if not boxes else (min(b[0] for b in boxes), min(b[1] for b in boxes),
                                           max(b[2] for b in boxes), max(b[3] for b in boxes)))
    return out


def identities(material: Material, found: dict[int, Track]) -> list[InputCheck]:
    """Subjects of the driving mask (all frames) against the identities the reference masks bind."""
    driving = set(found) if material.identities is not None else {1}
    bound = reference_identities(material)
    out = []
    for identity in sorted(driving - bound):
        frames = np.flatnonzero(found[identity].present).tolist() if identity in found else []
        out.append(check("identities", "", len(frames), f"{name(identity).capitalize()} moves in the driving mask "
                         f"({len(frames)} frames) but is in no reference mask: it gets no character; add it to the "
                         "reference mask or paint it out of the driving mask.", frames, identity, verdict="fail",
                         unit="frames"))
    for identity in sorted(bound - driving):
        out.append(check("identities", "", 0, f"The reference binds {name(identity)}, but no frame of the driving "
                         "mask has it: that character will not appear; paint its subject in the driving mask.",
                         identity=identity, verdict="warn"))
    if not out and material.identities is None:
        out.append(passed("identities", "No driving mask: every frame is identity 1, which the reference binds; "
                          "export masks to have the subjects checked.", 1.0, "subjects"))
    elif not out:
        out.append(passed("identities", f"{len(driving)} subject{'s' if len(driving) > 1 else ''} in the driving "
                          f"mask, each with its character in the reference ({', '.join(map(str, sorted(driving)))}).",
                          float(len(driving)), "subjects"))
    return out


def sizes(material: Material, found: dict[int, Track]) -> list[InputCheck]:
    """Each subject's height in the frame, and the frames where it is missing."""
    n, height, width = material.identities.shape
    out = []
    for identity, track in sorted(found.items()):
        heights = track.heights(height)
        median = float(np.nanmedian(heights))
        fill = float(np.median(track.pixels[track.present])) / (height * width)
        small = np.flatnonzero(heights < LIMITS["subject_size"].warn).tolist()
        verdict = LIMITS["subject_size"].verdict(median)
        if verdict == "ok":
            message = f"{name(identity).capitalize()} is {median:.0%} of the frame tall (fills {fill:.1%} of it)."
            small = []
        else:
            message = (f"{name(identity).capitalize()} is only {median:.0%} of the frame tall (fills {fill:.1%} of "
                       "it): its face and hands get too few pixels; crop closer or raise the output size.")
        out.append(check("subject_size", "subject_size", median, message, small, identity, verdict))
        missing = np.flatnonzero(~track.present).tolist()
        if missing:
            share = len(missing) / n
            out.append(check("subject_missing", "subject_missing", share,
                             f"{name(identity).capitalize()} is missing from the mask at {frames_text(missing)}: the "
                             "model invents its motion there; fix the mask on those frames.", missing, identity))
    return out


def _iou(a, b) -> float:
    if a is None or b is None:
        return 0.0
    x0, y0, x1, y1 = max(a[0], b[0]), max(a[1], b[1]), min(a[2], b[2]), min(a[3], b[3])
    inter = max(0, x1 - x0) * max(0, y1 - y0)
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union else 0.0


def _touch(a, b, gap: int = 2) -> bool:
    """Whether two boxes meet (within `gap` pixels)."""
    return a is not None and b is not None and a[0] - gap < b[2] and b[0] - gap < a[2] and a[1] - gap < b[3] \
        and b[1] - gap < a[3]


def overlaps(identity_maps: np.ndarray, found: dict[int, Track]) -> list[InputCheck]:
    """Frames where two identities overlap: their boxes overlap, or they touch while one of them has lost
    part of its usual area (a colour mask has one identity per pixel, so the one behind is cut away)."""
    limit = LIMITS["overlap"]
    ids = sorted(found)
    if len(ids) < 2:
        return []
    kernel = np.ones((5, 5), np.uint8)
    out = []
    for i, a in enumerate(ids):
        for b in ids[i + 1:]:
            usual = {t: max(1.0, float(np.median(found[t].pixels[found[t].present]))) for t in (a, b)}
            scores, behind = [], {a: 0, b: 0}
            for k in range(len(identity_maps)):
                box_a, box_b = found[a].boxes[k], found[b].boxes[k]
                score = _iou(box_a, box_b)
                if _touch(box_a, box_b):
                    near = cv2.dilate((identity_maps[k] == a).astype(np.uint8), kernel) > 0
                    if (near & (identity_maps[k] == b)).any():
                        hidden = {t: 1.0 - found[t].pixels[k] / usual[t] for t in (a, b)}
                        back = max(hidden, key=hidden.get)
                        score = max(score, hidden[back])
                        behind[back] += hidden[back] > limit.warn
                scores.append(score)
            hit = [k for k, score in enumerate(scores) if score > limit.warn]
            if not hit:
                continue
            back = max(behind, key=behind.get)
            out.append(check("overlap", "overlap", max(scores),
                             f"{name(a).capitalize()} and {name(b)} overlap at {frames_text(hit)} ({name(back)} is "
                             "partly hidden): their limbs can swap or merge; choose a shot where they stay apart.",
                             hit, None))
    if not out:
        out.append(passed("overlap", f"The {len(ids)} subjects never overlap.", 0.0, limit.unit))
    return out


def framing(material: Material, found: dict[int, Track]) -> list[InputCheck]:
    """Per identity: the reference character's box (height, aspect) against the driving subject's median box."""
    reference = material.reference[0]
    height = reference.shape[0]
    limit_name = "reference_scale" if material.mode == "replace" else "reference_scale_animate"
    out = []
    for identity, track in sorted(found.items()):
        on = reference == identity
        if on.sum() < MIN_SUBJECT_PIXELS or on.mean() >= _WHOLE_FRAME:
            continue  # not in the main reference, or a reference without a mask: nothing framed to compare
        x0, y0, x1, y1 = _boxes(on[None])[0]
        ref_h, ref_aspect = (y1 - y0) / height, (x1 - x0) / max(1, y1 - y0)
        boxes = [b for b in track.boxes if b is not None]
        drv_h = float(np.median([(b[3] - b[1]) / height for b in boxes]))
        drv_aspect = float(np.median([(b[2] - b[0]) / max(1, b[3] - b[1]) for b in boxes]))
        scale = ref_h / drv_h
        mismatch = max(scale, 1 / scale)
        verdict = LIMITS[limit_name].verdict(mismatch)
        who = name(identity).capitalize()
        if verdict != "ok" and material.mode == "replace":
            size = "large" if scale > 1 else "small"
            message = (f"{who}: the reference character is {scale:.2f}x the driving subject's height, so it comes out "
                       f"about {mismatch:.2f}x too {size}; reframe the reference so the character is {drv_h:.0%} of "
                       f"its height (now {ref_h:.0%}), a scale of {1 / scale:.2f}.")
        elif verdict != "ok":
            message = (f"{who}: the reference character is {scale:.2f}x the driving subject's height: frame the "
                       "reference like the driving subject (full body for a full-body shot).")
        else:
            message = f"{who}: the reference is framed like the driving subject ({scale:.2f}x its height)."
        out.append(check("reference_framing", limit_name, mismatch, message, identity=identity, verdict=verdict))
        aspect = max(ref_aspect / drv_aspect, drv_aspect / ref_aspect)
        if LIMITS["reference_aspect"].verdict(aspect) != "ok":
            out.append(check("reference_framing", "reference_aspect", aspect,
                             f"{who}: the reference character's box is {ref_aspect:.2f} wide per unit of height, the "
                             f"driving subject's {drv_aspect:.2f}: a reference posed or cropped unlike the subject "
                             "leaves body parts to invent; use a reference in a similar pose, uncropped.",
                             identity=identity))
    return out
