"""Where a transfer's bytes land: written at an offset of a file, past the page cache where the system allows.

Standard library only; both ends of a transfer use it (the worker's blob store for uploads, the
add-on's downloads). Those bytes are written once and read later, if at all (a job decodes the
clip; Blender loads the frames it shows), so they need no room in the page cache now: on a GPU
worker that cache holds the model's tens of GB of weights, which a long plate streamed through it
would push out. Linux's O_DIRECT skips the cache, and costs almost no CPU: on this project's 2-core
test machine 64 MiB of new file took 130-200 ms of CPU written the ordinary way and 4 ms direct
(`bench/transfer.py` prints both), which is what held uploads and downloads far below the wire's
speed. Direct writes need an aligned buffer, offset and length: the aligned part of each write goes
direct, a file's unaligned tail the ordinary way. Where a file system or platform refuses direct
I/O (tmpfs, macOS, Windows) everything is written the ordinary way.

Hand-written: no library in either environment writes at an offset with O_DIRECT and a fallback.
"""

from __future__ import annotations

import errno
import mmap
import os
import threading

ALIGN = 4096  # what every Linux file system asks of O_DIRECT buffers, offsets and lengths
STAGING_BYTES = 4 << 20  # the aligned buffer one writer copies through (one binary chunk)
# Smaller writes go through the cache: a direct write waits for the disk, which for a job's many
# small frames cost more time than the cache's CPU (a 512p result's 83 files: 36 ms of waits).
DIRECT_FROM_BYTES = 1 << 20
_DIRECT = getattr(os, "O_DIRECT", 0)


class ChunkWriter:
    """Writes byte strings at offsets of files. One per thread that writes (its buffer is reused)."""

    def __init__(self, direct: bool = True):
        self._direct = direct and bool(_DIRECT)
        self._refused: set[str] = set()  # folders whose file system refused O_DIRECT
        self._staging: mmap.mmap | None = None  # page-aligned, made on the first direct write
        self._lock = threading.Lock()

    def write_at(self, path: str | os.PathLike, offset: int, data) -> None:
        """Write `data` (bytes-like) at `offset` of `path`, creating the file when it is missing."""
        view = memoryview(data).cast("B")
        path = os.fspath(path)
        with self._lock:
            direct = len(view) - len(view) % ALIGN if self._may_go_direct(path, offset, len(view)) else 0
            if direct:
                try:
                    self._write_direct(path, offset, view[:direct])
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self._refused.add(os.path.dirname(os.path.abspath(path)))
                    direct = 0
            if direct < len(view):
                fd = os.open(path, os.O_WRONLY | os.O_CREAT, 0o666)
                try:
                    _pwrite_all(fd, view[direct:], offset + direct)
                finally:
                    os.close(fd)

    def append(self, path: str | os.PathLike, data) -> int:
        """Write `data` at the end of `path` (created when missing); the file's size after it."""
        try:
            offset = os.path.getsize(path)
        except FileNotFoundError:
            offset = 0
        self.write_at(path, offset, data)
        return offset + len(data)

    def close(self) -> None:
        with self._lock:
            if self._staging is not None:
                self._staging.close()
                self._staging = None

    def _may_go_direct(self, path: str, offset: int, size: int) -> bool:
        return self._direct and size >= DIRECT_FROM_BYTES and offset % ALIGN == 0 and os.path.dirname(os.path.abspath(path)) not in self._refused

    def _write_direct(self, path: str, offset: int, view: memoryview) -> None:
        if self._staging is None:
            self._staging = mmap.mmap(-1, STAGING_BYTES)
        staging = memoryview(self._staging)
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | _DIRECT, 0o666)
        try:
            for start in range(0, len(view), STAGING_BYTES):
                piece = view[start: start + STAGING_BYTES]
                staging[: len(piece)] = piece
                _pwrite_all(fd, staging[: len(piece)], offset + start)
        finally:
            staging.release()
            os.close(fd)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written
