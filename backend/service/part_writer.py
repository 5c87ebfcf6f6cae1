"""Upload chunks hashed and written on a thread of their own, while the connection receives the next ones.

Receiving a chunk (TLS decryption), hashing it and writing it each cost the worker about as much
CPU as the others; done one after the other on the connection's thread they held uploads to a
third of the wire's speed here. `PartWriter` takes a chunk from the blob store at once (at most
QUEUED_CHUNKS wait: the connection stops reading beyond that) and hashes and writes it on its own
thread, in the order the chunks came. `wait` returns once every chunk of a part file is written and
hashed; a failed write stops that part's later chunks and is raised there, and by the next `add`.
"""

from __future__ import annotations

import collections
import threading
from pathlib import Path

from protocol.direct_io import ChunkWriter

QUEUED_CHUNKS = 3  # 12 MiB of binary chunks waiting at most


class PartWriter:
    """Writes (part file, offset, bytes) in order on one thread, updating each part's running hash."""

    def __init__(self, writer: ChunkWriter):
        self._writer = writer
        self._cond = threading.Condition()
        self._queue: collections.deque = collections.deque()
        self._pending: collections.Counter = collections.Counter()  # part -> chunks not yet written
        self._failed: dict[Path, OSError] = {}
        self._thread: threading.Thread | None = None

    def add(self, part: Path, offset: int, data, hasher) -> None:
        """Queue `data` for `offset` of `part` (waits while QUEUED_CHUNKS wait); raises the part's last failure."""
        with self._cond:
            if part in self._failed:
                self._wait_for(part)
            while len(self._queue) >= QUEUED_CHUNKS:
                self._cond.wait()
            self._queue.append((part, offset, data, hasher))
            self._pending[part] += 1
            if self._thread is None:
                self._thread = threading.Thread(target=self._run, name="scail2-blob-writer", daemon=True)
                self._thread.start()
            self._cond.notify_all()

    def wait(self, part: Path) -> None:
        """Return once every queued chunk of `part` is written and hashed; raise its failure (OSError)."""
        with self._cond:
            self._wait_for(part)

    def _wait_for(self, part: Path) -> None:
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
                part, offset, data, hasher = self._queue.popleft()
                failed = part in self._failed
                self._cond.notify_all()  # room in the queue
            if not failed:
                try:
                    self._writer.write_at(part, offset, data)
                    hasher.update(data)
                except OSError as exc:
                    _cut_at(part, offset)  # no later chunk lands past a hole
                    with self._cond:
                        self._failed[part] = exc
            with self._cond:
                self._pending[part] -= 1
                self._cond.notify_all()


def _cut_at(part: Path, offset: int) -> None:
    try:
        with open(part, "r+b") as fh:
            fh.truncate(offset)
    except OSError:
        pass
