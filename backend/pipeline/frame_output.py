"""A job's frames leave the sampling thread: PNGs on a small pool, the preview encoded as they come.

After a segment is decoded the GPU would otherwise wait while the CPU encodes its PNGs and, at the
end, reads every PNG back to encode the preview (3.7 s at 512p, 6.5 s at 720p for 81 frames). Here
`add` hands a segment's frames over and returns at once: each PNG is written atomically on a
thread pool (OpenCV's encoder releases the GIL), and one more thread feeds the same in-memory frames
to the preview's encoder in frame order. The next segment samples meanwhile.

A segment counts as written only once every one of its PNGs is on disk (`settle`), so the job's
state never claims frames that a crash could lose, and a resumed job continues from what is really
there. Written by hand because no library pairs an ordered video encoder with a write pool.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from . import durable, media

_END = None  # the preview queue's last item


class _Abandoned(Exception):
    """The job stopped: the preview is not to be kept."""


@dataclass
class _PendingSegment:
    index: int
    frames: list[tuple[int, Path, Future]] = field(default_factory=list)


class PreviewEncoder:
    """Encodes uint8 [H, W, 3] RGB frames, handed over in order, into an .mp4 on its own thread;
    the file appears (atomically) only when `finish` succeeds."""

    def __init__(self, path: Path, fps: float):
        self.path, self.fps = path, fps
        # Unbounded: its items are views of frames the PNG pool holds anyway, and the encoder (about
        # 0.1 s a frame) never falls a segment behind sampling (seconds a step).
        self._queue: queue.Queue = queue.Queue()
        self._error: BaseException | None = None
        self._abandoned = False
        self._ended = False  # the encoder has taken the queue's last item
        self._thread = threading.Thread(target=self._encode, name="preview-encoder", daemon=True)
        self._thread.start()

    def put(self, frame: np.ndarray) -> None:
        if self._error is None:
            self._queue.put(frame)

    def _encode(self) -> None:
        def frames():
            while (frame := self._queue.get()) is not _END:
                yield frame
            self._ended = True
            if self._abandoned:  # raising inside the write removes its temporary file
                raise _Abandoned()
        try:
            durable.write_preview_stream(self.path, frames(), self.fps)
        except BaseException as exc:  # re-raised by finish(), on the job's thread
            self._error = exc
            while not self._ended and self._queue.get() is not _END:  # drain, so put() never blocks
                pass

    def finish(self) -> None:
        """Wait for the encoder; raise what it failed with."""
        self._queue.put(_END)
        self._thread.join()
        if self._error is not None:
            raise self._error

    def abandon(self) -> None:
        """Stop without a preview (cancelled or failed job): the temporary file is removed."""
        self._abandoned = True
        self._queue.put(_END)
        self._thread.join()


class FrameOutput:
    """The frames of one job on their way to disk (see the module's docstring)."""

    def __init__(self, job_dir: Path, frame_name: Callable[[int], str], preview: PreviewEncoder | None,
                 workers: int | None = None):
        self.job_dir, self.frame_name, self.preview = job_dir, frame_name, preview
        self._pool = ThreadPoolExecutor(max_workers=workers or min(4, os.cpu_count() or 1),
                                        thread_name_prefix="png-writer")
        self._pending: list[_PendingSegment] = []

    def add(self, segment_index: int, indices: Iterable[int], frames: np.ndarray) -> None:
        """Hand over one segment's new frames (uint8 [N, H, W, 3], job frame `indices`); returns at once."""
        pending = _PendingSegment(segment_index)
        for k, rgb in zip(indices, frames):
            path = self.job_dir / self.frame_name(k)
            pending.frames.append((k, path, self._pool.submit(durable.write_png_atomic, path, rgb)))
            if self.preview is not None:
                self.preview.put(rgb)
        self._pending.append(pending)

    def add_existing(self, indices: Iterable[int]) -> None:
        """Frames already on disk (a resumed job's earlier segments) go to the preview, read back once."""
        if self.preview is not None:
            for k in indices:
                self.preview.put(media.read_image(self.job_dir / self.frame_name(k))[0])

    def settle(self, wait: bool) -> list[tuple[int, list[tuple[int, Path]]]]:
        """Segments whose PNGs are all on disk, in order, as (segment index, [(frame index, path)]).

        With `wait` it blocks until every segment handed over is written. A failed write is raised
        here (OSError, with the frame's path in `.filename` when the OS gave it).
        """
        done = []
        while self._pending:
            segment = self._pending[0]
            if not wait and not all(future.done() for _, _, future in segment.frames):
                break
            written = []
            for k, path, future in segment.frames:
                try:
                    future.result()
                except OSError as exc:
                    exc.filename = exc.filename or str(path)
                    raise
                written.append((k, path))
            done.append((segment.index, written))
            self._pending.pop(0)
        return done

    def close(self, keep_preview: bool) -> None:
        """Finish every write; finish the preview when `keep_preview`, else drop it."""
        try:
            self._pool.shutdown(wait=True)
        finally:
            if self.preview is not None:
                (self.preview.finish if keep_preview else self.preview.abandon)()
