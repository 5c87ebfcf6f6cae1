"""Durable files: atomic writes (a reader sees the old file or the whole new one, and a crash
loses neither) and content hashes of a job's inputs.

Every writer puts its bytes in a hidden temporary file beside the target (".NAME.8hex" + suffix,
the names `job_folder` clears after a killed run), fsyncs it, renames it over the target and
fsyncs the folder. Standard library at import: `job_folder`, the worker's blob store and the farm
bundle use these before torch is loaded, so OpenCV and numpy are imported only by the PNG and
MP4 writers that need them.
"""

from __future__ import annotations

import hashlib
import itertools
import json
import math
import os
import re
import secrets
from collections.abc import Callable, Iterator
from typing import TYPE_CHECKING, Union

from .probe import MediaError, clip_files

if TYPE_CHECKING:
    import numpy as np

PathLike = Union[str, os.PathLike]


# The names `_temp_beside` gives (".NAME.8hex" + ".tmp", or ".mp4" for the preview): what a killed write leaves.
TEMP_NAME = re.compile(r"\..+\.[0-9a-f]{8}\.(tmp|mp4)")


def _temp_beside(path: str, suffix: str) -> str:
    """A new hidden temporary file in the folder of `path` (same file system, so os.replace is
    atomic; hidden, so folder readers skip it)."""
    folder, name = os.path.split(os.path.abspath(path))
    while True:
        temp = os.path.join(folder, f".{name}.{secrets.token_hex(4)}{suffix}")
        try:
            # Not tempfile.mkstemp: its 0600 mode would survive the rename; this gets the umask's.
            fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o666)
        except FileExistsError:
            continue
        os.close(fd)
        return temp


def _fsync_path(path: str) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def _replace_durably(temp: str, path: str) -> None:
    """fsync the finished temp file, rename it over `path`, then fsync the folder (POSIX) so the
    rename itself survives a crash."""
    _fsync_path(temp)
    os.replace(temp, path)
    if os.name == "posix":
        try:
            _fsync_path(os.path.dirname(os.path.abspath(path)))
        except OSError:
            pass  # some file systems refuse fsync on folders; the data itself is synced


def _write_atomic(path: str, write: Callable[[str], None], suffix: str = ".tmp", synced: bool = True) -> None:
    """`write(temp)` into a new temporary file beside `path`, then put it in place (durably when `synced`);
    on any failure the temporary file is removed and `path` is left as it was."""
    temp = _temp_beside(path, suffix)
    try:
        write(temp)
        if synced:
            _replace_durably(temp, path)
        else:
            os.replace(temp, path)
    except BaseException:
        _remove_quietly(temp)
        raise


def write_json_atomic(path: PathLike, data: dict, synced: bool = True) -> None:
    """Write JSON so a reader sees the old file or the whole new one: temp file, fsync, os.replace (not
    `synced`: no fsync, for a file whose loss in a crash costs nothing but a redo; two fsyncs take ms).

    Strict JSON only: a NaN or infinity is refused (MediaError naming where it is), never written
    as the `NaN` / `Infinity` no other JSON reader accepts; the old file is then left as it was.
    """
    try:
        text = json.dumps(data, indent=1, allow_nan=False)
    except ValueError:
        raise MediaError(f"cannot write {os.fspath(path)}: {_non_finite(data) or 'a value'} is not a finite "
                         "number") from None

    def write(temp: str) -> None:
        with open(temp, "w", encoding="utf-8") as f:
            f.write(text)

    _write_atomic(os.fspath(path), write, synced=synced)


def _non_finite(value, where: str = "") -> str | None:
    """Where the first NaN or infinity in nested dicts and lists is, as "job.guidance"."""
    if isinstance(value, float) and not math.isfinite(value):
        return where or "the value"
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, (list, tuple)) else ()
    for key, item in items:
        found = _non_finite(item, f"{where}.{key}" if where else str(key))
        if found:
            return found
    return None


def write_png_atomic(path: PathLike, image: np.ndarray) -> None:
    """Write a PNG so a reader never sees a partial file: temp file, fsync, os.replace.

    image: uint8 or uint16, [H, W] grey, [H, W, 3] RGB or [H, W, 4] RGBA.
    """
    import cv2
    import numpy as np

    path = os.fspath(path)
    image = np.asarray(image)
    if image.dtype not in (np.uint8, np.uint16):
        raise ValueError(f"write_png_atomic takes uint8 or uint16 pixels, got {image.dtype}")
    if image.ndim == 3 and image.shape[2] == 3:
        image = cv2.cvtColor(image, cv2.COLOR_RGB2BGR)
    elif image.ndim == 3 and image.shape[2] == 4:
        image = cv2.cvtColor(image, cv2.COLOR_RGBA2BGRA)
    elif image.ndim != 2:
        raise ValueError(f"write_png_atomic takes [H, W], [H, W, 3] or [H, W, 4], got shape {image.shape}")
    ok, encoded = cv2.imencode(".png", image)
    if not ok:
        raise MediaError(f"cannot encode PNG: {path}")

    def write(temp: str) -> None:
        with open(temp, "wb") as f:
            f.write(encoded.tobytes())

    _write_atomic(path, write)


def write_bytes_atomic(path: PathLike, data: bytes) -> None:
    """Write `data` so a reader sees the old file or the whole new one: temp file, fsync, os.replace."""

    def write(temp: str) -> None:
        with open(temp, "wb") as f:
            f.write(data)

    _write_atomic(os.fspath(path), write)


def write_preview_mp4(path: PathLike, frames_uint8: np.ndarray, fps: float) -> None:
    """Write uint8 [N, H, W, 3] RGB frames as an MPEG-4 ('mp4v') .mp4, atomically."""
    import numpy as np

    frames = np.asarray(frames_uint8)
    if frames.dtype != np.uint8 or frames.ndim != 4 or frames.shape[3] != 3:
        raise ValueError(f"write_preview_mp4 takes uint8 [N, H, W, 3], got {frames.dtype} {frames.shape}")
    write_preview_stream(path, iter(frames), fps)


def write_preview_stream(path: PathLike, frames: Iterator[np.ndarray], fps: float) -> None:
    """Write uint8 [H, W, 3] RGB frames, as an iterator yields them, as an MPEG-4 ('mp4v') .mp4,
    atomically: the file appears only once the last frame is encoded.

    'mp4v' is the encoder the pip OpenCV wheels ship (no H.264). Odd sizes are padded by one
    repeated row/column, since the encoder would silently crop them. Every frame must have the
    first one's size.
    """
    import cv2
    import numpy as np

    path = os.fspath(path)
    if not (math.isfinite(fps) and fps > 0):
        raise ValueError(f"frame rate must be positive, got {fps}")
    first = next(frames, None)
    if first is None:
        raise ValueError("write_preview_mp4 needs at least one frame")
    if first.dtype != np.uint8 or first.ndim != 3 or first.shape[2] != 3:
        raise ValueError(f"a preview frame must be uint8 [H, W, 3], got {first.dtype} {first.shape}")
    height, width, _ = first.shape
    pad_h, pad_w = height % 2, width % 2

    def write(temp: str) -> None:
        writer = cv2.VideoWriter(temp, cv2.VideoWriter_fourcc(*"mp4v"), float(fps), (width + pad_w, height + pad_h))
        if not writer.isOpened():
            raise MediaError(f"cannot write video: {path}")
        try:
            for frame in itertools.chain([first], frames):
                if frame.shape != first.shape:
                    raise ValueError(f"preview frames must all be {first.shape}, got {frame.shape}")
                if pad_h or pad_w:
                    frame = np.pad(frame, ((0, pad_h), (0, pad_w), (0, 0)), mode="edge")
                writer.write(cv2.cvtColor(frame, cv2.COLOR_RGB2BGR))
        finally:
            writer.release()
        if os.path.getsize(temp) == 0:
            raise MediaError(f"cannot write video: {path}")

    _write_atomic(path, write, suffix=".mp4")


def _remove_quietly(path: str) -> None:
    try:
        os.remove(path)
    except FileNotFoundError:
        pass


def file_sha256(path: PathLike, chunk_bytes: int = 1 << 20) -> str:
    """Hex SHA-256 of a file, read in chunks so large videos need no memory."""
    digest = hashlib.sha256()
    with open(os.fspath(path), "rb") as f:
        while chunk := f.read(chunk_bytes):
            digest.update(chunk)
    return digest.hexdigest()


def input_sha256(path: PathLike) -> str | None:
    """Hex SHA-256 of an input as the job reads it, None when it names nothing readable.

    A file hashes to its bytes. An image sequence (folder or frame pattern, as Blender's exports are)
    hashes to one digest over each frame's name and digest in playback order, so a changed, added or
    renumbered frame changes it.
    """
    try:
        files = clip_files(path, "input")
    except MediaError:
        return file_sha256(path) if os.path.isfile(path) else None
    if files is None or (len(files) == 1 and os.fspath(path) == files[0]):
        return file_sha256(path)
    digest = hashlib.sha256()
    for frame in files:
        digest.update(f"{os.path.basename(frame)}\0{file_sha256(frame)}\n".encode())
    return digest.hexdigest()

