"""What the checks look at: the job's frames and masks, decoded once, small, framed as the job crops them.

`gather` reads the driving clip's frames the job will use (the model-rate frames of `frame_times`,
each source frame decoded once), crops each to the job's aspect as the job does (the centre) and
scales it to `ANALYSIS_LONG_SIDE`, so a subject's size and position are what the model will see.
A video is decoded with PyAV on every core and scaled by FFmpeg's own scaler as it is converted to
RGB: 2x faster than OpenCV's decode plus an area resize of 1080p frames, which is most of the cost
of the checks. An image sequence goes through the media reader (its headers checked) and is shrunk
by Gaussian pyramid halving before the last resize (an area resize of a 1080p image costs as much
as its decoding). The driving mask and the reference masks become identity maps: uint8 [h, w] with 0
for no identity and 1..6 for the palette's identities.
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

import cv2
import numpy as np

from protocol import PALETTE

from ..pipeline import media, pixels, probe
from ..pipeline.inputs import PreparedInputs
from .thresholds import ANALYSIS_LONG_SIDE

# The palette colour of each identity as its three channel bits (on above 225, as the encoding reads it).
_CODES = np.zeros(8, np.uint8)
for _identity, _colour in enumerate(PALETTE, start=1):
    _CODES[(_colour[0] > 225) * 4 + (_colour[1] > 225) * 2 + (_colour[2] > 225)] = _identity


@dataclass
class Material:
    """The job's inputs at the analysis size. N job frames of h x w pixels."""

    frames: np.ndarray  # uint8 [N, h, w, 3] RGB
    grey: np.ndarray  # uint8 [N, h, w]
    source_frames: list[int]  # per job frame: the driving clip's frame index
    identities: np.ndarray | None  # uint8 [N, h, w] identity map of the driving mask; None without one
    reference: list[np.ndarray]  # uint8 [h, w] identity maps of the reference and each extra view
    mode: str
    inputs: PreparedInputs


def analysis_size(height: int, width: int) -> tuple[int, int]:
    """(h, w): the job's aspect with the long side ANALYSIS_LONG_SIDE (never larger than the job)."""
    scale = min(1.0, ANALYSIS_LONG_SIDE / max(height, width))
    return max(8, round(height * scale)), max(8, round(width * scale))


def identity_map(mask: np.ndarray) -> np.ndarray:
    """uint8 [..., 3] colour mask -> uint8 [...] identity (0: background, 1..6 the palette's)."""
    bits = mask > 225
    return _CODES[bits[..., 0] * 4 + bits[..., 1] * 2 + bits[..., 2]]


def _crop_box(height: int, width: int, size: tuple[int, int]) -> tuple[int, int, int, int]:
    """(y0, y1, x0, x1): the part of a height x width frame the job keeps (its centre crop to `size`'s aspect)."""
    scaled_h, scaled_w = pixels.cover_size(height, width, *size)
    keep_h = round(size[0] * height / scaled_h)
    keep_w = round(size[1] * width / scaled_w)
    y0, x0 = (height - keep_h) // 2, (width - keep_w) // 2
    return y0, y0 + keep_h, x0, x0 + keep_w


def _small(frame: np.ndarray, size: tuple[int, int], nearest: bool) -> np.ndarray:
    """A frame cropped as the job crops it and scaled to `size` (nearest: colour masks keep their colours)."""
    y0, y1, x0, x1 = _crop_box(*frame.shape[:2], size)
    frame = frame[y0:y1, x0:x1]
    if nearest:
        return cv2.resize(frame, size[::-1], interpolation=cv2.INTER_NEAREST_EXACT)
    while frame.shape[0] >= 2 * size[0] and frame.shape[1] >= 2 * size[1]:
        frame = cv2.pyrDown(frame)
    return cv2.resize(np.ascontiguousarray(frame), size[::-1], interpolation=cv2.INTER_AREA)


def _read_video(clip: media.ClipInfo, wanted: list[int], size) -> dict[int, np.ndarray] | None:
    """Frames `wanted` of a video, decoded by PyAV and scaled by FFmpeg; None when PyAV cannot read it
    the way OpenCV counts it (the media reader then decodes it)."""
    import av

    y0, y1, x0, x1 = _crop_box(clip.height, clip.width, size)
    # The whole frame scaled so the kept part comes out at `size`; the crop follows.
    full_h, full_w = round(clip.height * size[0] / (y1 - y0)), round(clip.width * size[1] / (x1 - x0))
    oy, ox = round(y0 * size[0] / (y1 - y0)), round(x0 * size[1] / (x1 - x0))
    targets, out = set(wanted), {}
    try:
        with av.open(clip.path) as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            for index, frame in enumerate(container.decode(stream)):
                if index > wanted[-1]:
                    break
                if index in targets:
                    if (frame.height, frame.width) != (clip.height, clip.width):
                        return None  # rotated by metadata: OpenCV turns it, FFmpeg does not
                    rgb = frame.to_ndarray(width=full_w, height=full_h, format="rgb24")
                    out[index] = np.ascontiguousarray(rgb[oy:oy + size[0], ox:ox + size[1]])
    except (av.error.FFmpegError, IndexError, OSError):
        return None
    return out if len(out) == len(targets) and all(f.shape[:2] == size for f in out.values()) else None


def _read_still(path: str, clip: media.ClipInfo, size, nearest: bool) -> np.ndarray:
    """One 8-bit frame file, its header checked against the pixel limit first, scaled down at once. OpenCV's
    BGR is turned to RGB after the scaling (cheap there); other depths and EXR go through the media reader."""
    probe.check_image(path, clip.max_pixels, clip.what)
    image = None
    if not path.lower().endswith(".exr"):
        image = cv2.imread(path, cv2.IMREAD_UNCHANGED)
    if image is None or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] not in (3, 4):
        return _small(media.read_image(path, max_pixels=clip.max_pixels, what=clip.what)[0], size, nearest)
    return np.ascontiguousarray(_small(image[:, :, :3], size, nearest)[:, :, ::-1])


def _read(clip: media.ClipInfo, wanted: list[int], size, nearest: bool) -> dict[int, np.ndarray]:
    """Frames `wanted` (sorted, unique) of a clip, each scaled down as soon as it is decoded. A sequence's
    files are read on every core (OpenCV lets go of the GIL while it decodes): 1080p PNG masks cost more
    than anything else the checks do."""
    if clip.kind == "video" and not nearest:
        frames = _read_video(clip, wanted, size)
        if frames is not None:
            return frames
    if clip.kind == "sequence":
        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return dict(zip(wanted, pool.map(lambda i: _read_still(clip.files[i], clip, size, nearest), wanted)))
    return {i: _small(frame, size, nearest) for i, frame in zip(wanted, media.iter_frames(clip, wanted))}


def gather(inputs: PreparedInputs) -> Material:
    """Decode and scale what the checks need from prepared inputs (the job's frames, masks, references)."""
    size = analysis_size(inputs.height, inputs.width)
    source_frames = [src for src, _t in inputs.frame_times]
    wanted = sorted(set(source_frames))
    small = _read(inputs.driving, wanted, size, nearest=False)
    frames = np.stack([small[i] for i in source_frames])
    grey = np.stack([cv2.cvtColor(f, cv2.COLOR_RGB2GRAY) for f in frames])
    identities = None
    if inputs.driving_mask is not None:
        masks = _read(inputs.driving_mask, wanted, size, nearest=True)
        identities = np.stack([identity_map(masks[i]) for i in source_frames])
    references = [inputs.reference_mask] + [mask for _rgb, mask in inputs.extra_references]
    reference = [identity_map(_small(mask, size, nearest=True)) for mask in references]
    return Material(frames, grey, source_frames, identities, reference, inputs.spec.mode, inputs)
