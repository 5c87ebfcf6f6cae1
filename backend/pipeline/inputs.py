"""Checking and preparing a job's input files, before any model is loaded.

Every problem with the inputs is one `InputError` line, raised here, so a
bad job never costs GPU time. Masks that are missing are not guessed: the
documented fallback (the whole frame is identity 1) is used and a warning is
recorded in the job's manifest.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import protocol
from protocol import JobSpec

from . import media
from .masks import MAX_IDENTITIES, PALETTE, backgrounds, identities_present

ALPHA_THRESHOLD = 128


class InputError(ValueError):
    """A job input that cannot be used, as one line for the artist."""


@dataclass
class PreparedInputs:
    """What the runner needs, decoded once; frames are read per segment later."""

    spec: JobSpec
    driving: media.ClipInfo
    frame_times: list[tuple[int, float]]  # per output frame: (source frame index, source time in s)
    height: int
    width: int
    reference: np.ndarray  # uint8 [H, W, 3] at the job's size
    reference_mask: np.ndarray  # uint8 [H, W, 3] colour mask at the job's size
    driving_mask: media.ClipInfo | None
    extra_references: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)
    warnings: list[str] = field(default_factory=list)


def job_size(spec: JobSpec, reference_shape: tuple[int, int]) -> tuple[int, int]:
    """(H, W): explicit, or the tier's size in the reference's orientation (landscape if W >= H)."""
    if spec.height and spec.width:
        return spec.height, spec.width
    short, long = protocol.RESOLUTIONS[spec.resolution]
    ref_h, ref_w = reference_shape
    return (short, long) if ref_w >= ref_h else (long, short)


def fallback_mask(height: int, width: int) -> np.ndarray:
    """The documented fallback: the whole frame is identity 1."""
    return np.broadcast_to(np.array(PALETTE[0], np.uint8), (height, width, 3)).copy()


def mask_from_alpha(alpha: np.ndarray, background: tuple[int, int, int]) -> np.ndarray:
    """Identity 1 where the image is opaque, the mode's background elsewhere."""
    out = np.empty((*alpha.shape, 3), np.uint8)
    out[...] = background
    out[alpha >= ALPHA_THRESHOLD] = PALETTE[0]
    return out


def _require_file(path: str | None, what: str) -> Path:
    if not path or not Path(path).exists():
        raise InputError(f"{what} not found: {path}")
    return Path(path)


def _still_with_mask(image_path, mask_path, what, background, size, warnings):
    """A still and its colour mask at `size`: from the mask file, the alpha channel, or the fallback."""
    rgb, alpha = media.read_image(_require_file(image_path, what))
    height, width = size
    rgb = media.resize_cover_crop(rgb, height, width)
    if mask_path:
        mask, _ = media.read_image(_require_file(mask_path, f"{what} mask"))
        mask = media.resize_cover_crop(mask, height, width)  # as the reference: bicubic, thresholded later
    elif alpha is not None:
        mask = mask_from_alpha(media.resize_cover_crop(alpha, height, width, interpolation=media.NEAREST), background)
    else:
        mask = fallback_mask(height, width)
        warnings.append(f"no mask for the {what}: the whole image is used as identity 1")
    return rgb, mask


def prepare_inputs(spec: JobSpec) -> PreparedInputs:
    """Validate every input of `spec` and decode the stills; raise InputError on the first problem."""
    try:
        spec.validate()
    except protocol.ProtocolError as exc:
        raise InputError(str(exc)) from None
    _require_file(spec.driving, "driving clip")
    warnings: list[str] = []
    try:
        driving = media.probe_clip(spec.driving, fps=spec.driving_fps)
        if spec.frame_start >= driving.frame_count:
            raise InputError(
                f"frame range starts at {spec.frame_start} but the driving clip has {driving.frame_count} frames"
            )
        frame_times = media.model_frame_times(driving, spec.model_fps, spec.frame_start, spec.frame_end)
        if not frame_times:
            raise InputError("the chosen frame range of the driving clip has no frames")

        ref_rgb, _ = media.read_image(_require_file(spec.reference, "reference image"))
        size = job_size(spec, ref_rgb.shape[:2])
        if size[0] % 32 or size[1] % 32:
            raise InputError(f"size {size[0]}x{size[1]} is not divisible by 32")
        driving_bg, reference_bg = backgrounds(spec.mode)
        reference, reference_mask = _still_with_mask(
            spec.reference, spec.reference_mask, "reference image", reference_bg, size, warnings
        )

        driving_mask = None
        if spec.driving_mask:
            _require_file(spec.driving_mask, "driving mask")
            driving_mask = media.probe_clip(spec.driving_mask, fps=driving.fps)
            if driving_mask.frame_count != driving.frame_count:
                raise InputError(
                    f"the driving mask has {driving_mask.frame_count} frames but the driving clip has "
                    f"{driving.frame_count}"
                )
        else:
            warnings.append("no driving mask: every driving frame is used as identity 1")

        masks = spec.extra_reference_masks or [None] * len(spec.extra_references)
        extra = [
            _still_with_mask(path, mask, f"extra reference {i + 1}", reference_bg, size, warnings)
            for i, (path, mask) in enumerate(zip(spec.extra_references, masks))
        ]
    except media.MediaError as exc:
        raise InputError(str(exc)) from None

    for lora in spec.loras:
        _require_file(lora.get("path"), "LoRA file")

    prepared = PreparedInputs(
        spec, driving, frame_times, size[0], size[1], reference, reference_mask, driving_mask, extra, warnings
    )
    check_identities(prepared)
    return prepared


def check_identities(inputs: PreparedInputs) -> None:
    """Every identity the driving mask uses must exist in the reference or an extra view."""
    referenced = set(identities_present(torch.from_numpy(inputs.reference_mask)))
    for _, mask in inputs.extra_references:
        referenced |= set(identities_present(torch.from_numpy(mask)))
    if len(referenced) > MAX_IDENTITIES:
        raise InputError(f"SCAIL-2 binds at most {MAX_IDENTITIES} identities")
    if inputs.driving_mask is None:
        return
    first = media.read_frames(inputs.driving_mask, [inputs.frame_times[0][0]])[0]
    driving = set(identities_present(torch.from_numpy(first)))
    missing = sorted(driving - referenced)
    if missing:
        names = ", ".join(str(i + 1) for i in missing)
        inputs.warnings.append(
            f"identities {names} move in the driving mask but appear in no reference mask; "
            "they will not be bound to a character"
        )
