"""Upload chunks hashed and written on the part writer's own thread, in order, and a failed write's aftermath."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

from backend.service.part_writer import PartWriter
from protocol.direct_io import ChunkWriter


class FullAfter(ChunkWriter):
    """A real writer whose disk is full after `room` bytes (the ENOSPC a full disk gives)."""

    def __init__(self, room: int):
        super().__init__()
        self.room = room

    def write_at(self, path, offset, data):
        if offset + len(data) > self.room:
            raise OSError(errno.ENOSPC, "No space left on device")
        super().write_at(path, offset, data)


def test_chunks_land_in_order_and_the_running_hash_sees_each_once(tmp_path):
    writer = PartWriter(ChunkWriter())
    part, hasher = tmp_path / "a.part", hashlib.sha256()
    chunks = [os.urandom(1 << 20) for _ in range(9)]
    offset = 0
    for chunk in chunks:
        writer.add(part, offset, chunk, hasher)
        offset += len(chunk)
    writer.wait(part)
    whole = b"".join(chunks)
    assert part.read_bytes() == whole and hasher.hexdigest() == hashlib.sha256(whole).hexdigest()


def test_a_failed_write_stops_the_parts_later_chunks_and_is_raised_once(tmp_path):
    writer = PartWriter(FullAfter(room=3 << 20))
    part, hasher = tmp_path / "b.part", hashlib.sha256()
    chunk = os.urandom(1 << 20)
    for k in range(6):
        try:
            writer.add(part, k * len(chunk), chunk, hasher)
        except OSError as exc:  # raised by the add after the failure, once the part's queue is empty
            assert exc.errno == errno.ENOSPC
            break
    else:
        with pytest.raises(OSError):
            writer.wait(part)
    assert part.stat().st_size == 3 << 20  # what landed, with no chunk past a hole
    writer.wait(part)  # raised once: the part can go on from what it holds
    writer.add(part, 3 << 20, b"", hashlib.sha256())
    writer.wait(part)
