"""Video I/O: clips and stills on disk -> numpy frames (probing, decoding, resampling in time).

No model code lives here; resizing and model tensors are `pixels`, atomic writes and hashes `durable`,
header checks before decoding `probe`. Conventions used throughout:

* frames are RGB ``uint8`` arrays, ``[H, W, 3]`` for one image and ``[N, H, W, 3]`` for many;
* a clip is a video file (mp4/m4v/mov/mkv/avi/webm) or an image sequence: a folder of frames,
  a printf pattern such as ``frames/img_%04d.png`` (Blender's ``img_####.png`` works too), or a
  single still image (a one-frame sequence);
* frame indices count decoded frames from 0; times are seconds from the clip's first frame;
* nothing is decoded before its size is known to be within the input pixel limit
  (`protocol.JobSpec.max_input_pixels`): images by their header (`probe`), videos by their
  container.
"""

from __future__ import annotations

import bisect
import math
import os
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Union

# OpenCV only reads EXR when this is set. It is read on the first EXR call (not at import),
# but setting it before the import keeps that true whatever OpenCV version is installed.
os.environ["OPENCV_IO_ENABLE_OPENEXR"] = "1"

import cv2
import numpy as np

from protocol import DEFAULT_MAX_INPUT_PIXELS

from .clip_timing import gap_warning, sequence_timeline, variable_rate_warning, video_timing
from .probe import MediaError, check_image, check_pixels, clip_files

PathLike = Union[str, os.PathLike]

# Image sequences carry no frame rate; this is Blender's default scene rate.
DEFAULT_SEQUENCE_FPS = 24.0
# Rates outside this range come from broken container metadata (e.g. a 90 kHz time base).
_PLAUSIBLE_FPS = (0.1, 1000.0)

# A seek costs a keyframe search plus decoding up to a GOP; skipping this many frames by
# grab() (decode without colour conversion) is as cheap and cannot land on a wrong frame.
_SEEK_MIN_SKIP = 64
# Time steps closer than this (in frames) to a whole frame count as that frame.
_FRAME_EPS = 1e-6


@dataclass(frozen=True)
class ClipInfo:
    """What probe_clip learnt about a clip. width/height in pixels, fps in frames per second."""

    path: str
    kind: str  # 'video' | 'sequence'
    frame_count: int
    fps: float
    width: int
    height: int
    # Sequences only: the frame files in playback order.
    files: tuple[str, ...] = field(default=(), repr=False, compare=False)
    # The most pixels a frame may have: every sequence frame's header is checked before it is decoded.
    max_pixels: int = field(default=DEFAULT_MAX_INPUT_PIXELS, repr=False, compare=False)
    what: str = field(default="clip", repr=False, compare=False)  # names the clip in messages
    # A variable-frame-rate video only: each frame's presentation time in seconds from the first frame,
    # and when the last one ends (`clip_timing`). None: frame i is on screen from i / fps.
    times: tuple[float, ...] | None = field(default=None, repr=False, compare=False)
    end_time: float | None = field(default=None, repr=False, compare=False)
    # Sequences only: each frame's name (a held frame's is its missing file's, `clip_timing.sequence_timeline`).
    names: tuple[str, ...] = field(default=(), repr=False, compare=False)
    # What a job should tell the artist about the clip's timing (a variable rate, gaps in a sequence).
    warnings: tuple[str, ...] = field(default=(), repr=False, compare=False)

    @property
    def variable_rate(self) -> bool:
        return self.times is not None

    def frame_time(self, index: int) -> float:
        """When frame `index` (0..frame_count, the last meaning the clip's end) comes on screen, in s."""
        if self.times is None:
            return index / self.fps
        return self.times[index] if index < self.frame_count else self.end_time


# ---------------------------------------------------------------------------------------------
# Probing


def probe_clip(path: PathLike, fps: float | None = None, *, what: str = "driving clip",
               max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> ClipInfo:
    """Probe a video file or an image sequence (folder, printf/'#' pattern, or single still).

    fps: the rate of an image sequence (default DEFAULT_SEQUENCE_FPS, 24). A video's own rate
    wins; `fps` is only used for a video whose container reports no usable rate.
    what: names the input in error messages ("driving clip not found: PATH").
    max_pixels: frames over this many pixels are refused before they are decoded (a video by its
    container's size, every sequence frame by its header).
    """
    path = os.fspath(path)
    if fps is not None and not (math.isfinite(fps) and fps > 0):
        raise MediaError(f"frame rate must be positive, got {fps}: {path}")
    files = clip_files(path, what)
    if files is not None:
        return _probe_sequence(path, files, fps, what, max_pixels)
    return _probe_video(path, fps, what, max_pixels)


def _open_video(path: str) -> cv2.VideoCapture:
    # Force FFmpeg: OpenCV's image-sequence backend would otherwise claim some names.
    cap = cv2.VideoCapture(path, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        raise MediaError(f"cannot decode video: {path}")
    return cap


def video_size(cap: cv2.VideoCapture) -> tuple[int, int]:
    """(width, height) a video's container reports, before any frame is decoded (0, 0 if none)."""
    width, height = cap.get(cv2.CAP_PROP_FRAME_WIDTH), cap.get(cv2.CAP_PROP_FRAME_HEIGHT)
    if not (math.isfinite(width) and math.isfinite(height)):
        return 0, 0
    return int(width), int(height)


def check_video(path: PathLike, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS, what: str = "clip") -> None:
    """Refuse a video whose container says its frames are over `max_pixels`; decodes nothing."""
    path = os.fspath(path)
    cap = _open_video(path)
    try:
        check_pixels(*video_size(cap), max_pixels, what, path)
    finally:
        cap.release()


def _probe_video(path: str, fps: float | None, what: str, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> ClipInfo:
    cap = _open_video(path)
    try:
        check_pixels(*video_size(cap), max_pixels, what, path)
        ok, first = cap.read()
        if not ok:
            raise MediaError(f"{what} has no frames: {path}")
        # The decoded frame is authoritative: OpenCV applies rotation metadata to frames but
        # CAP_PROP_FRAME_WIDTH/HEIGHT report the stored size.
        height, width = first.shape[:2]
        rate = cap.get(cv2.CAP_PROP_FPS)
        if not (math.isfinite(rate) and _PLAUSIBLE_FPS[0] <= rate <= _PLAUSIBLE_FPS[1]):
            if fps is None:
                raise MediaError(f"cannot tell the frame rate of {what}; give it explicitly: {path}")
            rate = fps
        check_pixels(width, height, max_pixels, what, path)  # a container that reported no size
        count = _verified_frame_count(cap, path)
    finally:
        cap.release()
    timing = video_timing(path, count)
    if timing is None or not timing.variable:
        return ClipInfo(path, "video", count, float(rate), width, height, max_pixels=max_pixels, what=what)
    # The rate a variable clip reports is its average; its frames are timed by their own timestamps.
    return ClipInfo(path, "video", count, count / timing.end, width, height, max_pixels=max_pixels, what=what,
                    times=timing.times, end_time=timing.end, warnings=(variable_rate_warning(what, timing),))


def _verified_frame_count(cap: cv2.VideoCapture, path: str) -> int:
    """The number of decodable frames; `cap` has already read frame 0.

    CAP_PROP_FRAME_COUNT comes from container metadata (or duration x rate) and can be wrong,
    e.g. for a truncated AVI. Check it cheaply: frame n-1 must decode and frame n must not.
    Only when that fails are the frames counted by decoding them all.
    """
    reported = cap.get(cv2.CAP_PROP_FRAME_COUNT)
    claimed = int(round(reported)) if math.isfinite(reported) and reported > 0 else 0
    if claimed >= 2 and cap.set(cv2.CAP_PROP_POS_FRAMES, claimed - 1) and cap.grab():
        count = claimed
        while cap.grab():  # the metadata said too few: the frames past it are real
            count += 1
        return count
    if claimed == 1 and not cap.grab():
        return 1
    cap.release()
    cap.open(path, cv2.CAP_FFMPEG)
    count = 0
    while cap.grab():
        count += 1
    return max(count, 1)  # frame 0 did decode before


def _probe_sequence(path: str, files: list[str], fps: float | None, what: str,
                    max_pixels: int = DEFAULT_MAX_INPUT_PIXELS) -> ClipInfo:
    first, _ = _read_rgb(files[0], max_pixels, what)
    height, width = first.shape[:2]
    rate = DEFAULT_SEQUENCE_FPS if fps is None else float(fps)
    timeline = sequence_timeline(files)
    warnings = (gap_warning(what, timeline.missing),) if timeline.missing else ()
    return ClipInfo(path, "sequence", len(timeline.files), rate, width, height, timeline.files, max_pixels, what,
                    names=timeline.names, warnings=warnings)


# ---------------------------------------------------------------------------------------------
# Decoding


def read_frames(info_or_path: ClipInfo | PathLike, indices: Sequence[int]) -> np.ndarray:
    """Frames `indices` of a clip as uint8 [N, H, W, 3] RGB, in the order asked.

    Indices may repeat and come in any order. A video is opened once and decoded forward:
    one seek (only when the first frame is far from the start) and then sequential reads.
    """
    info = info_or_path if isinstance(info_or_path, ClipInfo) else probe_clip(info_or_path)
    indices = [int(i) for i in indices]
    for i in indices:
        if not 0 <= i < info.frame_count:
            raise MediaError(f"frame {i} is outside the clip's {info.frame_count} frames: {info.path}")
    out = np.empty((len(indices), info.height, info.width, 3), np.uint8)
    slots: dict[int, list[int]] = {}  # frame index -> where it goes in `out`
    for slot, i in enumerate(indices):
        slots.setdefault(i, []).append(slot)
    for i, frame in _decode(info, sorted(slots)):
        if frame.shape != out.shape[1:]:
            raise MediaError(
                f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, not {info.width}x{info.height}: {info.path}"
            )
        first, *repeats = slots[i]
        out[first] = frame
        for slot in repeats:
            out[slot] = out[first]
    return out


def iter_frames(info: ClipInfo, indices: Sequence[int]) -> Iterator[np.ndarray]:
    """Frames `indices` (ascending, unique) as uint8 [H, W, 3] RGB, one at a time, so a long clip is never
    all in memory."""
    for i, frame in _decode(info, [int(i) for i in indices]):
        if frame.shape != (info.height, info.width, 3):
            raise MediaError(
                f"frame {i} is {frame.shape[1]}x{frame.shape[0]}, not {info.width}x{info.height}: {info.path}"
            )
        yield frame


def _decode(info: ClipInfo, wanted: list[int]):
    """Yield (index, RGB frame) for the sorted, unique frame indices `wanted`."""
    if info.kind != "video":
        for i in wanted:
            yield i, _read_rgb(info.files[i], info.max_pixels, f"frame {i} of the {info.what}")[0]
        return
    if not wanted:
        return
    cap = _open_video(info.path)
    try:
        position = 0  # index of the frame the next grab() decodes
        if wanted[0] >= _SEEK_MIN_SKIP:
            position = _seek(cap, info, wanted[0])
        for target in wanted:
            while position <= target:  # grab() decodes without the colour conversion
                if not cap.grab():
                    raise MediaError(f"cannot decode frame {position} of video: {info.path}")
                position += 1
            ok, bgr = cap.retrieve()
            if not ok:
                raise MediaError(f"cannot decode frame {target} of video: {info.path}")
            yield target, cv2.cvtColor(bgr, cv2.COLOR_BGR2RGB)
    finally:
        cap.release()


def _seek(cap: cv2.VideoCapture, info: ClipInfo, target: int) -> int:
    """Seek to frame `target` and grab it; returns the index the next grab() would decode.

    OpenCV seeks by time and decodes forward to the frame. The landing is checked against the
    decoded frame's timestamp; if it disagrees (odd timestamps, a broken index) the video is
    reopened and decoded from the start instead, which is slower but always right.
    """
    if cap.set(cv2.CAP_PROP_POS_FRAMES, target) and cap.grab():
        landed = cap.get(cv2.CAP_PROP_POS_MSEC) / 1000.0
        # Within half a frame of the target's own time (a variable-rate clip's frames are not i / fps apart).
        if abs(landed - info.frame_time(target)) < 0.5 * (info.frame_time(target + 1) - info.frame_time(target)):
            return target + 1  # frame `target` is grabbed; the read loop retrieves it
    cap.release()
    cap.open(info.path, cv2.CAP_FFMPEG)
    return 0


def read_image(path: PathLike, *, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
               what: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    """An image as RGB uint8 [H, W, 3] and its alpha uint8 [H, W] (None when it has none).

    Grey images become RGB; 16-bit images are scaled to 8 bits; float images (EXR) are taken
    as linear light and converted to sRGB. JPEGs are turned upright by their EXIF orientation.
    An image over `max_pixels` (by its header) is refused before it is decoded.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise MediaError(f"{what} not found: {path}")
    return _read_rgb(path, max_pixels, what)


def _read_rgb(path: str, max_pixels: int = DEFAULT_MAX_INPUT_PIXELS,
              what: str = "image") -> tuple[np.ndarray, np.ndarray | None]:
    check_image(path, max_pixels, what)
    ext = os.path.splitext(path)[1].lower()
    if ext in (".jpg", ".jpeg"):
        # IMREAD_COLOR applies the EXIF orientation; JPEG has no alpha to lose.
        flags = cv2.IMREAD_COLOR
    else:
        flags = cv2.IMREAD_UNCHANGED
    try:
        image = cv2.imread(path, flags)
    except cv2.error:
        image = None
    if image is None:
        raise MediaError(f"cannot decode image: {path}")
    if image.ndim == 2:
        image = image[:, :, None]
    channels = image.shape[2]
    alpha = None
    if channels in (2, 4):
        alpha = image[:, :, -1]
        image = image[:, :, :-1]
    if image.shape[2] == 1:
        rgb = np.repeat(image, 3, axis=2)
    else:
        rgb = image[:, :, ::-1]  # OpenCV is BGR
    return _to_uint8(rgb, srgb=True), None if alpha is None else _to_uint8(alpha, srgb=False)


def _to_uint8(values: np.ndarray, srgb: bool) -> np.ndarray:
    """uint8/uint16/float image data -> contiguous uint8. Floats are linear: colour gets the sRGB
    transfer curve (srgb=True), alpha (srgb=False) is only scaled."""
    if values.dtype == np.uint8:
        return np.ascontiguousarray(values)
    if values.dtype == np.uint16:
        return ((values.astype(np.uint32) * 255 + 32767) // 65535).astype(np.uint8)
    if np.issubdtype(values.dtype, np.floating):
        linear = np.clip(np.nan_to_num(values.astype(np.float32), nan=0.0), 0.0, 1.0)
        encoded = linear_to_srgb(linear) if srgb else linear
        return np.round(encoded * 255.0).astype(np.uint8)
    raise MediaError(f"unsupported pixel type {values.dtype}")


def linear_to_srgb(linear: np.ndarray) -> np.ndarray:
    """The sRGB transfer curve (IEC 61966-2-1) on values in [0, 1]."""
    return np.where(
        linear <= 0.0031308, linear * 12.92, 1.055 * np.power(linear, 1.0 / 2.4, dtype=np.float32) - 0.055
    ).astype(np.float32)


# ---------------------------------------------------------------------------------------------
# Timing


def model_frame_times(
    info: ClipInfo, model_fps: float = 16.0, start: int = 0, end: int | None = None
) -> list[tuple[int, float]]:
    """Resample source frames [start, end) to the model's rate: (source index, time in s) pairs.

    Output frame k samples the clip at t_k = (when frame `start` shows) + k/model_fps seconds after the
    clip's first frame, for as long as t_k is before frame `end` shows. It takes the source frame on
    screen at t_k: at a constant rate floor(t_k * fps), in a variable-rate clip the last frame whose own
    timestamp is at or before t_k. A t_k within 1e-6 frames of a frame boundary counts as that frame
    (float error must not drop an exact hit to the frame before). The time returned is t_k itself, so
    output frame k maps back onto the source timeline exactly. `end` defaults to, and is clamped to,
    the clip's frame count; a constant-rate source at the model rate maps one to one.
    """
    if not (math.isfinite(model_fps) and model_fps > 0):
        raise MediaError(f"model frame rate must be positive, got {model_fps}")
    if start < 0:
        raise MediaError(f"frame range cannot start before frame 0, got {start}")
    end = info.frame_count if end is None else min(int(end), info.frame_count)
    if info.times is not None:
        return _variable_rate_times(info, model_fps, start, end)
    step = info.fps / model_fps  # source frames per output frame
    pairs = []
    k = 0
    while True:
        position = k * step  # in source frames after `start`
        nearest = round(position)
        if abs(position - nearest) < _FRAME_EPS:
            position = float(nearest)
        if start + position >= end:
            return pairs
        pairs.append((start + math.floor(position), start / info.fps + k / model_fps))
        k += 1


def _variable_rate_times(info: ClipInfo, model_fps: float, start: int, end: int) -> list[tuple[int, float]]:
    """model_frame_times for a clip whose frames carry their own timestamps (`ClipInfo.times`)."""
    first, stop = info.frame_time(start), info.frame_time(end)
    eps = _FRAME_EPS / info.fps  # the 1e-6 frames of the constant-rate rule, in seconds
    pairs = []
    k = 0
    while start < end:
        t = first + k / model_fps
        if t >= stop - eps:
            return pairs
        shown = bisect.bisect_right(info.times, t + eps, lo=start, hi=end) - 1
        pairs.append((shown, t))
        k += 1
    return pairs
