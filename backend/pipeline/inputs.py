"""Checking and preparing a job's input files, before any model is loaded.

Every problem with the inputs is one `InputError` line, raised here, so a
bad job never costs GPU time. Masks that are missing are not guessed: the
documented fallback (the whole frame is identity 1) is used and a warning is
recorded in the job's manifest. Masks that are there are checked: a mask of
another aspect ratio than its image is refused (the two would be cropped
differently), and colours off the palette are a warning or, over a subject's
worth, refused (`masks.check_mask`).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

import protocol
from protocol import JobSpec

from ..errors import UserError
from . import media, pixels, probe
from .masks import MAX_IDENTITIES, PALETTE, MaskError, backgrounds, check_mask, identities_present

ALPHA_THRESHOLD = 128


class InputError(UserError):
    """A job input that cannot be used, as one line for the artist."""


@dataclass
class PreparedInputs:
    """What the runner needs, decoded once; frames are read per segment later."""

    spec: JobSpec
    driving: media.ClipInfo
    frame_times: list[tuple[int, float]]  # per output frame: (source frame index, source time in s)
    height: int
    width: int
    # The stills at the job's size as the reference resizes them: float32 [H, W, 3] in [-1, 1], not
    # rounded to 8 bits, bicubic overshoot beyond [-1, 1] kept (`docs/model.md`, "Matching the official code").
    reference: np.ndarray
    reference_mask: np.ndarray  # uint8 [H, W, 3] colour mask at the job's size
    driving_mask: media.ClipInfo | None
    extra_references: list[tuple[np.ndarray, np.ndarray]] = field(default_factory=list)  # (float rgb, uint8 mask)
    warnings: list[str] = field(default_factory=list)
    # The input checks' report (protocol.InputCheckReport.to_dict()), kept in the manifest as `input_checks`.
    input_checks: dict | None = None


def job_size(spec: JobSpec, reference_shape: tuple[int, int]) -> tuple[int, int]:
    """(H, W): explicit, or the tier's size in the reference's orientation (`protocol.output_size`)."""
    return protocol.output_size(spec.resolution, spec.height, spec.width, reference_shape)


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
    if not path or not Path(path).is_file():
        raise InputError(f"{what} not found: {path}")
    return Path(path)


# A mask is cropped to the job's size the way its image is only when both have one aspect ratio.
# How far apart (in job pixels, at the worst edge) the two may land: half of the 8 x 8 cell the
# mask encoding averages over, so a 1920x1088 mask still fits 1920x1080 footage; beyond that a
# subject's mask visibly misses it and the job is refused.
MAX_MISALIGNMENT = 4.0
# Driving-mask frames checked for colours off the palette: the first, middle and last of the job.
MASK_SAMPLES = 3


def misalignment(image_hw: tuple[int, int], mask_hw: tuple[int, int], size: tuple[int, int]) -> float:
    """How many job pixels apart, at worst, an image and its mask land once each is scaled to cover
    `size` and centre-cropped (`pixels.resize_cover_crop`); 0 for the same aspect ratio."""
    worst = 0.0
    for axis in (0, 1):
        spans = []
        for src in (image_hw, mask_hw):
            scaled = pixels.cover_size(*src, *size)[axis]
            offset = (scaled - size[axis]) // 2
            spans.append((offset / scaled, (offset + size[axis]) / scaled))  # the crop, in [0, 1] of the source
        (i0, i1), (m0, m1) = spans
        scale = pixels.cover_size(*image_hw, *size)[axis]  # job pixels per unit of the image
        worst = max(worst, abs(i0 - m0) * scale, abs(i1 - m1) * scale)
    return worst


def check_alignment(image_hw, mask_hw, size, what: str, of: str) -> None:
    """Refuse a mask that would be cropped differently from its image (another aspect ratio)."""
    if misalignment(image_hw, mask_hw, size) > MAX_MISALIGNMENT:
        raise InputError(
            f"the {what} is {mask_hw[1]}x{mask_hw[0]} but the {of} is {image_hw[1]}x{image_hw[0]}: a mask must have "
            f"its image's aspect ratio, or the two are cropped differently and do not line up"
        )


def _mask_warnings(mask: np.ndarray, what: str, mode: str, for_reference: bool) -> list[str]:
    try:
        return check_mask(mask, what, mode, for_reference=for_reference)
    except MaskError as exc:
        raise InputError(str(exc)) from None


def _still_with_mask(image, mask_path, what, mode, size, warnings, limit):
    """A still (decoded: rgb, alpha) at `size` as float32 in [-1, 1] (`PreparedInputs.reference`) and its
    uint8 colour mask: from the mask file, the alpha channel, or the fallback; the mask checked for
    alignment and colours."""
    rgb, alpha = image
    height, width = size
    background = backgrounds(mode)[1]
    if mask_path:
        mask, _ = media.read_image(_require_file(mask_path, f"{what} mask"), max_pixels=limit, what=f"{what} mask")
        check_alignment(rgb.shape[:2], mask.shape[:2], size, f"{what} mask", what)
        mask = pixels.resize_cover_crop(mask, height, width)  # as the reference: bicubic, thresholded later
        warnings.extend(_mask_warnings(mask, f"{what} mask", mode, for_reference=True))
    elif alpha is not None:
        mask = mask_from_alpha(pixels.resize_cover_crop(alpha, height, width, interpolation=pixels.NEAREST), background)
    else:
        mask = fallback_mask(height, width)
        warnings.append(f"no mask for the {what}: the whole image is used as identity 1")
    return pixels.resize_cover_crop(pixels.to_signed_float(rgb), height, width), mask


def _driving_mask(spec: JobSpec, driving: media.ClipInfo, frame_times, size, warnings) -> media.ClipInfo:
    """The driving mask's clip, checked against the driving clip (frames, aspect) and, on a few
    frames, for colours off the palette."""
    mask = media.probe_clip(spec.driving_mask, fps=driving.fps, what="driving mask", max_pixels=spec.max_input_pixels)
    if mask.frame_count != driving.frame_count:
        raise InputError(f"the driving mask has {mask.frame_count} frames but the driving clip has "
                         f"{driving.frame_count}")
    check_alignment((driving.height, driving.width), (mask.height, mask.width), size, "driving mask", "driving clip")
    picks = np.linspace(0, len(frame_times) - 1, min(MASK_SAMPLES, len(frame_times))).round().astype(int)
    sample = sorted({frame_times[k][0] for k in picks})
    frames = pixels.resize_cover_crop(media.read_frames(mask, sample), *size)
    warnings.extend(_mask_warnings(np.concatenate(list(frames), axis=0), "driving mask", spec.mode,
                                   for_reference=False))
    warnings.extend(mask.warnings)
    if not any(identities_present(torch.from_numpy(f)) for f in frames) and not _shows_identity(mask, frame_times):
        warnings.append(f"the driving mask shows no identity on any of the job's {len(frame_times)} frames (it is all "
                        f"background): no character is bound to the motion; paint each moving subject in its "
                        f"identity colour")
    return mask


def _shows_identity(mask: media.ClipInfo, frame_times) -> bool:
    """Whether any frame of the driving mask the job uses shows an identity; decodes them one at a time
    and stops at the first that does (only a mask whose sampled frames showed none gets here)."""
    used = sorted({source for source, _ in frame_times})
    return any(identities_present(torch.from_numpy(frame)) for frame in media.iter_frames(mask, used))


def prepare_inputs(spec: JobSpec) -> PreparedInputs:
    """Validate every input of `spec` and decode the stills; raise InputError on the first problem.

    Nothing is decoded before its size is known to be within `spec.max_input_pixels`; a printf or
    '####' pattern is a clip like a folder (`media.probe_clip`).
    """
    try:
        spec.validate()
    except protocol.ProtocolError as exc:
        raise InputError(str(exc)) from None
    warnings: list[str] = []
    limit = spec.max_input_pixels
    try:
        driving = media.probe_clip(spec.driving, fps=spec.driving_fps, what="driving clip", max_pixels=limit)
        if spec.frame_start >= driving.frame_count:
            raise InputError(
                f"frame range starts at {spec.frame_start} but the driving clip has {driving.frame_count} frames"
            )
        frame_times = media.model_frame_times(driving, spec.model_fps, spec.frame_start, spec.frame_end)
        if not frame_times:
            raise InputError("the chosen frame range of the driving clip has no frames")
        warnings.extend(driving.warnings)  # a variable frame rate, gaps in a sequence

        image = media.read_image(_require_file(spec.reference, "reference image"), max_pixels=limit,
                                 what="reference image")
        size = job_size(spec, image[0].shape[:2])
        if size[0] % 32 or size[1] % 32:
            raise InputError(f"size {size[0]}x{size[1]} is not divisible by 32")
        reference, reference_mask = _still_with_mask(
            image, spec.reference_mask, "reference image", spec.mode, size, warnings, limit
        )

        driving_mask = None
        if spec.driving_mask:
            driving_mask = _driving_mask(spec, driving, frame_times, size, warnings)
        else:
            warnings.append("no driving mask: every driving frame is used as identity 1")

        masks = spec.extra_reference_masks or [None] * len(spec.extra_references)
        extra = []
        for i, (path, mask) in enumerate(zip(spec.extra_references, masks)):
            what = f"extra reference {i + 1}"
            view = media.read_image(_require_file(path, what), max_pixels=limit, what=what)
            extra.append(_still_with_mask(view, mask, what, spec.mode, size, warnings, limit))
    except probe.MediaError as exc:
        raise InputError(str(exc)) from None

    for lora in spec.loras:
        _require_file(lora.get("path"), "LoRA file")

    prepared = PreparedInputs(
        spec, driving, frame_times, size[0], size[1], reference, reference_mask, driving_mask, extra, warnings
    )
    check_identities(prepared)
    return prepared


def check_input_files(spec: JobSpec) -> None:
    """What a worker can tell at once, before it queues a job: every input exists (a pattern
    matches a file) and no still, and no first frame of a clip, is over `spec.max_input_pixels`.

    Reads headers only (and opens a video's container); InputError as one line.
    """
    limit = spec.max_input_pixels
    clips = [("driving clip", spec.driving), ("driving mask", spec.driving_mask)]
    stills = [("reference image", spec.reference), ("reference image mask", spec.reference_mask)]
    stills += [(f"extra reference {i + 1}", p) for i, p in enumerate(spec.extra_references)]
    stills += [(f"extra reference {i + 1} mask", p) for i, p in enumerate(spec.extra_reference_masks)]
    try:
        for what, path in clips:
            if path:
                check_clip(path, what, limit)
        for what, path in stills:
            if path:
                probe.check_image(str(_require_file(path, what)), limit, what)
    except probe.MediaError as exc:
        raise InputError(str(exc)) from None
    for lora in spec.loras:
        _require_file(lora.get("path"), "LoRA file")


def check_clip(path: str, what: str = "clip", limit: int = protocol.DEFAULT_MAX_INPUT_PIXELS) -> None:
    """A clip (video, folder, pattern or still) exists and its first frame is within `limit`
    pixels, by headers; MediaError otherwise. For a worker's submit of any task."""
    files = probe.clip_files(path, what)
    if files is None:
        media.check_video(path, limit, what)
    else:
        probe.check_image(files[0], limit, what)


def check_identities(inputs: PreparedInputs) -> None:
    """At most MAX_IDENTITIES identities in the reference masks. Whether each subject of the driving mask
    has its identity there is the input checks' (`input_checks.subjects.identities`, on every frame)."""
    referenced = set(identities_present(torch.from_numpy(inputs.reference_mask)))
    for _, mask in inputs.extra_references:
        referenced |= set(identities_present(torch.from_numpy(mask)))
    if len(referenced) > MAX_IDENTITIES:
        raise InputError(f"SCAIL-2 binds at most {MAX_IDENTITIES} identities")
