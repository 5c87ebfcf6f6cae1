"""A take as arrays: its frames, the driving frames it follows, the identity masks and the reference.

Everything is at the job's size (the manifest's `size`; a long take scaled down, see PIXEL_BUDGET),
frame k of every array being job frame k,
so each score compares like with like. A take whose driving clip, mask or reference is no longer on
disk (a farm output copied elsewhere) still loads: what is missing is None and the scores that need
it say so instead of failing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

import protocol

from ..pipeline import media, pixels
from ..pipeline.inputs import ALPHA_THRESHOLD

# The most pixels (frames x height x width) a take is scored at: 81 frames at 512p. A longer or
# larger take is scaled down as it is read, so a 2,000-frame 1080p take needs no more memory
# (frames, and two flow fields of 8 bytes a pixel) than a 512p segment does.
PIXEL_BUDGET = 81 * 512 * 896
READ_CHUNK = 32  # driving frames decoded at a time (a 1080p clip is not held whole at full size)
# A mask pixel belongs to identity i when every channel is this close to PALETTE[i]: masks are
# resized bicubically (as the model reads them), so edges blend towards the background.
PALETTE_TOLERANCE = 96


class TakeError(ValueError):
    """A job folder that cannot be scored, as one line."""


@dataclass
class Take:
    """What the scores read. frames, driving: uint8 [T, H, W, 3] RGB; masks: identity (0-based) ->
    bool [T, H, W]; reference: uint8 [H, W, 3]; reference_masks: identity -> bool [H, W]."""

    frames: np.ndarray
    mode: str = "animate"
    driving: np.ndarray | None = None
    masks: dict[int, np.ndarray] = field(default_factory=dict)
    reference: np.ndarray | None = None
    reference_masks: dict[int, np.ndarray] = field(default_factory=dict)
    segment_starts: list[int] = field(default_factory=list)  # first new frame of each segment after the first
    notes: list[str] = field(default_factory=list)  # what could not be loaded, for the scores' limits

    def __post_init__(self):
        if not self.masks:  # the model's own fallback: the whole frame is identity 1
            self.masks = {0: np.ones(self.frames.shape[:3], bool)}
        if self.reference is not None and not self.reference_masks:
            self.reference_masks = {0: np.ones(self.reference.shape[:2], bool)}

    @property
    def count(self) -> int:
        return len(self.frames)

    @property
    def character(self) -> np.ndarray:
        """bool [T, H, W]: any identity."""
        return np.logical_or.reduce(list(self.masks.values()))


def identity_masks(rgb: np.ndarray) -> dict[int, np.ndarray]:
    """Colour-coded masks uint8 [..., 3] -> identity -> bool [...] for the identities present."""
    out = {}
    signed = rgb.astype(np.int16)
    for identity, colour in enumerate(protocol.PALETTE):
        hit = np.all(np.abs(signed - np.array(colour, np.int16)) < PALETTE_TOLERANCE, axis=-1)
        if hit.any():
            out[identity] = hit
    return out


def load_take(job_dir: Path, manifest: dict) -> Take:
    """The take in `job_dir` as arrays; TakeError (one line) when its own frames cannot be read."""
    job = manifest.get("job") or {}
    try:
        job_height, job_width = (int(v) for v in manifest["size"])
        entries = manifest["frames"]
        sources = [int(entry["source_frame"]) for entry in entries]
    except (KeyError, TypeError, ValueError) as exc:
        raise TakeError(f"{job_dir}: the manifest does not describe the take's frames ({exc})") from None
    height, width = scored_size(len(entries), job_height, job_width)
    frames = np.empty((len(entries), height, width, 3), np.uint8)
    for k, entry in enumerate(entries):
        try:
            rgb = media.read_image(job_dir / entry["file"], what="take frame")[0]
        except media.MediaError as exc:
            raise TakeError(f"{job_dir}: {exc}") from None
        if rgb.shape[:2] != (job_height, job_width):
            raise TakeError(f"{job_dir}: frame {k} is {rgb.shape[1]}x{rgb.shape[0]}, the manifest says "
                            f"{job_width}x{job_height}")
        frames[k] = pixels.resize_cover_crop(rgb, height, width)
    notes: list[str] = []
    driving = _clip_at_size(job.get("driving"), job.get("driving_fps"), sources, (height, width), "driving clip",
                            notes)
    mask_frames = _clip_at_size(job.get("driving_mask"), job.get("driving_fps"), sources, (height, width),
                                "driving mask", notes)
    masks = identity_masks(mask_frames) if mask_frames is not None else {}
    if mask_frames is None and not job.get("driving_mask"):
        notes.append("no driving mask: the whole frame counts as identity 1")
    reference, reference_masks = _reference(job, (height, width), notes)
    starts = [int(s["start"]) + int(s["history"]) for s in manifest.get("segments", [])[1:]]
    return Take(frames, job.get("mode", "animate"), driving, masks, reference, reference_masks, starts, notes)


def scored_size(count: int, height: int, width: int) -> tuple[int, int]:
    """The size a take of `count` frames is scored at: its own, or scaled down to PIXEL_BUDGET."""
    scale = min(1.0, (PIXEL_BUDGET / (count * height * width)) ** 0.5)
    return max(16, round(height * scale)), max(16, round(width * scale))


def _clip_at_size(path, fps, sources, size, what, notes) -> np.ndarray | None:
    if not path:
        return None
    try:
        info = media.probe_clip(path, fps=fps, what=what)
        return np.concatenate([pixels.resize_cover_crop(media.read_frames(info, sources[i: i + READ_CHUNK]), *size)
                               for i in range(0, len(sources), READ_CHUNK)])
    except (media.MediaError, OSError) as exc:
        notes.append(f"{what} not read ({exc})")
        return None


def _reference(job: dict, size, notes) -> tuple[np.ndarray | None, dict[int, np.ndarray]]:
    """The reference still at the job's size and its identity masks (mask file, alpha, or the whole image)."""
    try:
        rgb, alpha = media.read_image(job.get("reference") or "", what="reference image")
        reference = pixels.resize_cover_crop(rgb, *size)
        masks = {}
        if job.get("reference_mask"):
            mask_rgb, _ = media.read_image(job["reference_mask"], what="reference mask")
            masks = identity_masks(pixels.resize_cover_crop(mask_rgb, *size))
        elif alpha is not None:
            opaque = pixels.resize_cover_crop(alpha, *size, interpolation=pixels.NEAREST) >= ALPHA_THRESHOLD
            masks = {0: opaque}
        return reference, masks
    except (media.MediaError, OSError) as exc:
        notes.append(f"reference not read ({exc})")
        return None, {}
