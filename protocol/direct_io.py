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

`BackgroundWriter` does those writes on a thread of its own while the caller receives the next bytes:
receiving (TLS decryption), hashing and writing each cost about as much CPU as the others, and done
one after the other on one thread they held uploads to a third of the wire's speed here.

Hand-written: no library in either environment writes at an offset with O_DIRECT and a fallback.
"""

from __future__ import annotations

import collections
import concurrent.futures
import errno
import mmap
import os
import threading
import time

ALIGN = 4096  # what every Linux file system asks of O_DIRECT buffers, offsets and lengths
STAGING_BYTES = 4 << 20  # one binary chunk: a pooled payload buffer, or what a writer copies other bytes through
# Only whole binary chunks (a long file's pieces) go direct; anything smaller goes through the cache: a
# direct write waits for the disk, which for a job's many small frames cost more time than the cache's
# CPU (a 512p result's 83 files: 36 ms of waits), and so did its 2 MB preview, written last (paired,
# the result's fetch 0.063 -> 0.057 s, faster in 14 of 16 and 15 of 20 with 4 MiB than with 1 MiB).
DIRECT_FROM_BYTES = 4 << 20
QUEUED_BYTES = 12 << 20  # bytes waiting for a BackgroundWriter at most (three binary chunks; a job's frames)
_DIRECT = getattr(os, "O_DIRECT", 0)


class _PooledBuffer(mmap.mmap):
    """One of `PayloadBuffers`' buffers (anonymous memory: page-aligned, a whole chunk long)."""


class PayloadBuffers:
    """Buffers that whole binary chunks are received into, used again once written.

    A fresh buffer for every 4 MiB chunk faulted in its 1024 pages inside the TLS decryption that
    filled it, and a direct write of it needed a copy into an aligned buffer first (`ChunkWriter`).
    These stay mapped between chunks and are page-aligned, so a chunk is written from where it was
    received. A payload of any other size gets a plain bytearray. Whoever is given a buffer hands it to
    `BackgroundWriter.add` or lets it go; the writer gives it back once written. Paired on the 2-core test
    machine (two workers side by side, uploads alternated): a 64 MiB upload 0.198 -> 0.163 s (16 of 16
    faster; the worker's CPU 0.20 -> 0.16 s), again 0.157 -> 0.142 s (15 of 16); the add-on's 64 MiB
    download, alternated in one process, 0.114 -> 0.090 s and 0.106 -> 0.096 s (14 of 16 each).
    """

    def __init__(self, size: int = STAGING_BYTES, keep: int = 6):
        self.size, self.keep = size, keep
        self._free: list[_PooledBuffer] = []
        self._lock = threading.Lock()

    def take(self, size: int):
        """A writable buffer of `size` bytes (its contents are whatever it held before)."""
        if size != self.size:
            return bytearray(size)
        with self._lock:
            if self._free:
                return self._free.pop()
        return _PooledBuffer(-1, size)

    def give_back(self, data) -> None:
        """Take `data` back when it is one of ours (anything else is left alone)."""
        if type(data) is _PooledBuffer and not data.closed:
            with self._lock:
                if len(self._free) < self.keep and not any(data is free for free in self._free):
                    self._free.append(data)


PAYLOAD_BUFFERS = PayloadBuffers()  # one per process: both ends' readers take from it, their writers give back


class ChunkWriter:
    """Writes byte strings at offsets of files. One per thread that writes (its buffer is reused)."""

    def __init__(self, direct: bool = True):
        self._direct = direct and bool(_DIRECT)
        self._refused: set[str] = set()  # folders whose file system refused O_DIRECT
        self._staging: mmap.mmap | None = None  # page-aligned, made on the first direct write
        self._lock = threading.Lock()

    def write_at(self, path: str | os.PathLike, offset: int, data) -> None:
        """Write `data` (bytes-like) at `offset` of `path`, creating the file when it is missing (even
        for no bytes: an empty upload or download is an empty file)."""
        aligned = type(data) is _PooledBuffer  # written direct from where it is, no copy
        view = memoryview(data).cast("B")
        path = os.fspath(path)
        with self._lock:
            direct = len(view) - len(view) % ALIGN if self._may_go_direct(path, offset, len(view)) else 0
            if direct:
                try:
                    self._write_direct(path, offset, view[:direct], aligned)
                except OSError as exc:
                    if exc.errno != errno.EINVAL:
                        raise
                    self._refused.add(os.path.dirname(os.path.abspath(path)))
                    direct = 0
            if direct < len(view) or not len(view):  # an empty write still makes the file
                fd = _open_for_writing(path, 0)
                try:
                    _pwrite_all(fd, view[direct:], offset + direct)
                finally:
                    os.close(fd)

    def _may_go_direct(self, path: str, offset: int, size: int) -> bool:
        return (self._direct and size >= DIRECT_FROM_BYTES and offset % ALIGN == 0
                and os.path.dirname(os.path.abspath(path)) not in self._refused)

    def _write_direct(self, path: str, offset: int, view: memoryview, aligned: bool) -> None:
        if aligned:
            fd = _open_for_writing(path, _DIRECT)
            try:
                _pwrite_all(fd, view, offset)
            finally:
                os.close(fd)
            return
        if self._staging is None:
            self._staging = mmap.mmap(-1, STAGING_BYTES)
        staging = memoryview(self._staging)
        fd = _open_for_writing(path, _DIRECT)
        try:
            for start in range(0, len(view), STAGING_BYTES):
                piece = view[start: start + STAGING_BYTES]
                staging[: len(piece)] = piece
                _pwrite_all(fd, staging[: len(piece)], offset + start)
        finally:
            staging.release()
            os.close(fd)


def _open_for_writing(path: str, flags: int) -> int:
    """The file at `path` opened for writing, created with its folder when missing: a download's folders
    are made here, by its first write, so a fetch asks at once (made first, they took 0.3-0.6 ms of the
    request's way, though a paired run showed no difference in the whole fetch: 12 of 20)."""
    try:
        return os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o666)
    except FileNotFoundError:
        os.makedirs(os.path.dirname(path), exist_ok=True)
        return os.open(path, os.O_WRONLY | os.O_CREAT | flags, 0o666)


def _pwrite_all(fd: int, view: memoryview, offset: int) -> None:
    while len(view):
        written = os.pwrite(fd, view, offset)
        view, offset = view[written:], offset + written


class BackgroundWriter:
    """Writes (file, offset, bytes) in order on a thread of its own, while the caller receives the next
    bytes, updating a running hash of each file when given one. At most QUEUED_BYTES wait (the caller
    waits beyond that); `wait` returns once every queued write of a file is done; a failed write stops
    that file's later writes (the file cut where it failed, so none lands past a hole) and is raised
    there, and by the file's next `add`."""

    def __init__(self, writer: ChunkWriter | None = None, buffers: PayloadBuffers = PAYLOAD_BUFFERS):
        self._writer, self._buffers = writer or ChunkWriter(), buffers
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._queued = 0  # bytes in the queue
        self._pending: collections.Counter = collections.Counter()  # part -> chunks not yet written
        self._failed: dict = {}
        self._thread: threading.Thread | None = None
        # A whole chunk's direct write waits for the disk and its hash is CPU (both without the interpreter lock):
        # side by side, on a thread of their own, a chunk takes the longer of the two, not their sum. One after the
        # other on the 2-core test machine (3-4 ms of write, 2.7 ms of hash a 4 MiB chunk), the worker's writer fell
        # behind chunks arriving every 6.5 ms and an upload's last reply waited 20-23 ms for its queue.
        self._hashing: concurrent.futures.ThreadPoolExecutor | None = None  # made by the first whole chunk hashed

    def add(self, part, offset: int, data, hasher=None, then=None) -> None:
        """Queue `data` for `offset` of `part` (waits while QUEUED_BYTES wait), then `then()` once it is
        written (a rename into place); raises the part's last failure."""
        with self._cond:
            if part in self._failed:
                self._wait_for(part)
            while self._queue and self._queued + len(data) > QUEUED_BYTES:
                self._cond.wait()
            self._queue.append((part, offset, data, hasher, then))
            self._queued += len(data)
            self._pending[part] += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scail2-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def write_now(self, part, offset: int, data, then=None) -> float | None:
        """Write `data` at `offset` of `part` in the caller's thread, then `then()`: the seconds it took, or
        None (nothing done) while writes of `part` wait for the writer thread. A failure is raised, the
        file cut where it failed (as on the writer thread)."""
        with self._cond:
            if self._pending[part] or part in self._failed:
                return None
        start = time.perf_counter()
        try:
            self._writer.write_at(part, offset, data)
            if then is not None:
                then()
        except OSError:
            _cut_at(part, offset)
            raise
        finally:
            self._buffers.give_back(data)
        return time.perf_counter() - start

    def wait(self, part) -> None:
        """Return once every queued write of `part` is done; raise its failure (OSError)."""
        with self._cond:
            self._wait_for(part)

    def wait_all(self) -> None:
        """Return once every queued write is done; raise the first failure (OSError), forgetting the rest."""
        with self._cond:
            while self._queue or any(self._pending.values()):
                self._cond.wait()
            self._pending.clear()
            failures, self._failed = list(self._failed.values()), {}
        if failures:
            raise failures[0]

    def _wait_for(self, part) -> None:
        while self._pending[part]:
            self._cond.wait()
        del self._pending[part]
        failure = self._failed.pop(part, None)
        if failure is not None:
            raise failure

    def _run(self) -> None:
        while True:
            with self._cond:
                while not self._queue:
                    self._cond.wait()
                part, offset, data, hasher, then = self._queue.popleft()
                self._queued -= len(data)
                failed = part in self._failed
                self._cond.notify_all()  # room in the queue
            if not failed:
                try:
                    if hasher is not None and len(data) >= DIRECT_FROM_BYTES:  # a direct write waits for the disk
                        if self._hashing is None:
                            self._hashing = concurrent.futures.ThreadPoolExecutor(1, "scail2-hasher")
                        hashed = self._hashing.submit(hasher.update, data)
                        try:
                            self._writer.write_at(part, offset, data)
                        finally:
                            hashed.result()  # the buffer is given back (and the hash read) only once it is hashed
                    else:
                        self._writer.write_at(part, offset, data)
                        if hasher is not None:
                            hasher.update(data)
                    if then is not None:
                        then()
                except Exception as exc:  # OSError, or a fault of ours: raised to the waiter, never a hang
                    _cut_at(part, offset)  # no later chunk lands past a hole
                    with self._cond:
                        self._failed[part] = exc
            self._buffers.give_back(data)
            with self._cond:
                self._pending[part] -= 1
                self._cond.notify_all()


def _cut_at(part, offset: int) -> None:
    try:
        with open(part, "r+b") as fh:
            fh.truncate(offset)
    except OSError:
        pass
