"""Writing a transfer's bytes at offsets, past the page cache where the file system allows it, and on a
thread of their own in order (a failed write's aftermath included)."""

from __future__ import annotations

import errno
import hashlib
import os

import pytest

import protocol
from protocol import direct_io
from protocol.direct_io import ALIGN, DIRECT_FROM_BYTES, BackgroundWriter, ChunkWriter


def pieces(total: int, size: int) -> list[bytes]:
    data = os.urandom(total)
    return [data[k:k + size] for k in range(0, total, size)]


@pytest.mark.parametrize("piece_size", [DIRECT_FROM_BYTES * 2, DIRECT_FROM_BYTES + 1000, 5000])
def test_pieces_appended_in_order_make_the_file_whatever_their_alignment(tmp_path, piece_size):
    writer = ChunkWriter()
    parts = pieces(3 * DIRECT_FROM_BYTES + 123, piece_size)
    target = tmp_path / "out.bin"
    offset = 0
    for part in parts:
        writer.write_at(target, offset, part)
        offset += len(part)
    assert target.read_bytes() == b"".join(parts)


def test_a_write_at_an_offset_replaces_those_bytes_only(tmp_path):
    writer = ChunkWriter()
    target = tmp_path / "out.bin"
    base = os.urandom(4 * DIRECT_FROM_BYTES)
    writer.write_at(target, 0, base)
    patch = os.urandom(DIRECT_FROM_BYTES)
    writer.write_at(target, ALIGN * 3, patch)
    assert target.read_bytes() == base[:ALIGN * 3] + patch + base[ALIGN * 3 + len(patch):]


@pytest.mark.skipif(not getattr(os, "O_DIRECT", 0), reason="no O_DIRECT on this platform: every write is ordinary")
def test_a_file_system_that_refuses_direct_io_gets_ordinary_writes(tmp_path):
    """tmpfs refuses O_DIRECT on older kernels (EINVAL; newer ones take it): either way the bytes land, and a
    refusing folder is remembered and written the ordinary way."""
    shm = "/dev/shm"
    if not os.path.isdir(shm):
        pytest.skip("no /dev/shm (tmpfs) here")
    folder = os.path.join(shm, f"direct-io-test-{os.getpid()}")
    os.makedirs(folder)
    try:
        writer = ChunkWriter()
        data = os.urandom(2 * DIRECT_FROM_BYTES)
        target = os.path.join(folder, "out.bin")
        writer.write_at(target, 0, data)
        with open(target, "rb") as fh:
            assert fh.read() == data
        try:
            os.close(os.open(os.path.join(folder, "probe"), os.O_WRONLY | os.O_CREAT | direct_io._DIRECT))
            refused = False
        except OSError:
            refused = True
        assert (os.path.abspath(folder) in writer._refused) == refused
    finally:
        for name in os.listdir(folder):
            os.remove(os.path.join(folder, name))
        os.rmdir(folder)


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
    written_in_order(BackgroundWriter(ChunkWriter()), tmp_path / "a.part", hashlib.sha256(),
                     [os.urandom(1 << 20) for _ in range(9)])


def written_in_order(writer, part, hasher, chunks):
    """Queue `chunks` one after the other at their offsets of `part` with `hasher`; check the file and the hash."""
    offset = 0
    for chunk in chunks:
        writer.add(part, offset, chunk, hasher)
        offset += len(chunk)
    writer.wait(part)
    whole = b"".join(chunks)
    assert part.read_bytes() == whole and hasher.hexdigest() == hashlib.sha256(whole).hexdigest()


def test_a_failed_write_stops_the_parts_later_chunks_and_is_raised_once(tmp_path):
    writer = BackgroundWriter(FullAfter(room=3 << 20))
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


class DiskWaitingForTheHash(ChunkWriter):
    """A disk whose write of a whole chunk returns only once that chunk's hash has begun: a writer that
    hashed after writing (one after the other) never gets there."""

    def __init__(self, hashing):
        super().__init__()
        self.hashing, self.waited = hashing, []

    def write_at(self, path, offset, data):
        if len(data) >= DIRECT_FROM_BYTES:
            self.waited.append(self.hashing.wait(10))
        super().write_at(path, offset, data)


class SignallingHash:
    """SHA-256 that says when an update begins."""

    def __init__(self):
        self.sha, self.began = hashlib.sha256(), __import__("threading").Event()

    def update(self, data):
        self.began.set()
        self.sha.update(data)

    def hexdigest(self):
        return self.sha.hexdigest()


def test_a_whole_chunk_is_hashed_while_it_is_written_and_the_running_hash_stays_in_order(tmp_path):
    """An upload's 4 MiB chunk: its direct write waits for the disk while the hash runs beside it (the
    chunk takes the longer of the two, not their sum); smaller pieces are hashed after their write."""
    hasher = SignallingHash()
    disk = DiskWaitingForTheHash(hasher.began)
    written_in_order(BackgroundWriter(disk), tmp_path / "e.part", hasher,
                     [os.urandom(DIRECT_FROM_BYTES) for _ in range(3)] + [os.urandom(5000)])
    assert disk.waited == [True, True, True]  # each whole chunk's hash had begun while its write waited


def test_a_hash_that_fails_beside_a_write_is_raised_for_its_file(tmp_path):
    class Broken:
        def update(self, data):
            raise ValueError("a fault of ours")

    writer = BackgroundWriter()
    writer.add(tmp_path / "f.part", 0, os.urandom(DIRECT_FROM_BYTES), Broken())
    with pytest.raises(ValueError):
        writer.wait(tmp_path / "f.part")
    writer.add(tmp_path / "g.part", 0, os.urandom(DIRECT_FROM_BYTES), hashlib.sha256())  # the writer goes on
    writer.wait(tmp_path / "g.part")


def test_an_action_queued_after_a_files_writes_runs_once_they_landed_and_wait_all_waits_for_every_file(tmp_path):
    """A download's rename into place runs after its pieces are written, on the writer's thread."""
    writer = BackgroundWriter()
    pieces_a, pieces_b = pieces(3 << 20, 1 << 20), pieces(5000, 1000)
    for name, parts in (("a", pieces_a), ("b", pieces_b)):
        part, offset = tmp_path / f".{name}.part", 0
        for piece in parts:
            writer.add(part, offset, piece)
            offset += len(piece)
        writer.add(part, 0, b"", then=lambda part=part, name=name: os.replace(part, tmp_path / name))
    writer.wait_all()
    assert (tmp_path / "a").read_bytes() == b"".join(pieces_a) and (tmp_path / "b").read_bytes() == b"".join(pieces_b)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a", "b"]


@pytest.mark.parametrize("size", [0, 5000, DIRECT_FROM_BYTES + 5000])
def test_a_write_into_a_missing_folder_makes_the_folder(tmp_path, size):
    """A download's folders are made by its first write (not before its request goes), whatever way it goes."""
    data = os.urandom(size)
    target = tmp_path / "job" / "frames" / ".frame_000000.png.part"
    ChunkWriter().write_at(target, 0, data)
    assert target.read_bytes() == data


def test_writing_no_bytes_makes_an_empty_file(tmp_path):
    ChunkWriter().write_at(tmp_path / "empty", 0, b"")
    assert (tmp_path / "empty").read_bytes() == b""


class SlowDisk(ChunkWriter):
    """Real writes that wait for `go` first: a disk slower than the wire."""

    def __init__(self):
        super().__init__()
        self.go = __import__("threading").Event()

    def write_at(self, path, offset, data):
        self.go.wait(30)
        super().write_at(path, offset, data)


def test_the_queue_holds_a_job_folders_small_files_and_holds_the_caller_back_past_its_bytes(tmp_path):
    """The queue is bounded by bytes, not by count: a job's 300 KiB frames all wait their turn without
    holding the socket back, while a writer QUEUED_BYTES behind makes the caller wait."""
    import threading

    disk = SlowDisk()
    writer = BackgroundWriter(disk)
    frames = {tmp_path / f"frame_{k}.png": os.urandom(300 << 10) for k in range(12)}
    small = threading.Thread(target=lambda: [writer.add(path, 0, data) for path, data in frames.items()])
    small.start()
    small.join(5)
    assert not small.is_alive()  # 3.5 MiB in all: none of these waits, though the disk has written nothing
    big = threading.Thread(target=writer.add, args=(tmp_path / "plate.bin", 0, os.urandom(direct_io.QUEUED_BYTES)))
    big.start()
    big.join(0.5)
    assert big.is_alive()  # more than QUEUED_BYTES would wait: the caller is held back
    disk.go.set()
    big.join(30)
    writer.wait_all()
    assert all(path.read_bytes() == data for path, data in frames.items())
    assert (tmp_path / "plate.bin").stat().st_size == direct_io.QUEUED_BYTES


def frames_of(payloads: list[bytes]) -> bytes:
    """A binary-framed stream: each payload after its header line."""
    return b"".join(b'{"type": "blob_put", "payload": %d}\n' % len(p) + p for p in payloads)


def test_whole_chunks_are_received_into_one_reused_buffer_and_written_from_it(tmp_path):
    """A 4 MiB chunk lands in a pooled buffer, is written straight from it (no staging copy), and the
    buffer comes back for the next chunk only once its bytes are on their way to the file."""
    pool = direct_io.PayloadBuffers(size=4 << 20, keep=2)
    taken = []

    def take(size):
        taken.append(pool.take(size))
        return taken[-1]

    chunks = [os.urandom(4 << 20) for _ in range(5)] + [os.urandom(1000)]
    reader = protocol.FrameReader(1 << 10, binary=True, allocate=take)
    chunk_writer = ChunkWriter()
    writer = BackgroundWriter(chunk_writer, buffers=pool)
    part, offset, hasher = tmp_path / "c.part", 0, hashlib.sha256()
    stream = memoryview(frames_of(chunks))
    for start in range(0, len(stream), 16 << 10):  # as TLS hands it out: a record at a time
        for _line, payload in reader.feed(bytes(stream[start:start + (16 << 10)])):
            writer.add(part, offset, payload, hasher)
            writer.wait(part)  # written, so the buffer may be handed out again
            offset += len(payload)
    whole = b"".join(chunks)
    assert part.read_bytes() == whole and hasher.hexdigest() == hashlib.sha256(whole).hexdigest()
    assert len({id(buffer) for buffer in taken[:5]}) == 1  # one buffer, five chunks
    assert isinstance(taken[5], bytearray)  # the short tail: a plain buffer
    assert chunk_writer._staging is None  # nothing copied into an aligned buffer first


def test_the_pool_takes_back_only_its_own_buffers_each_once_and_keeps_a_few():
    pool = direct_io.PayloadBuffers(size=8192, keep=2)
    first, second, third = pool.take(8192), pool.take(8192), pool.take(8192)
    assert len(first) == 8192 and first is not second
    pool.give_back(bytearray(8192))  # not one of its buffers
    pool.give_back(first)
    pool.give_back(first)  # twice: still one entry (else two readers would fill one buffer)
    assert pool.take(8192) is first and pool.take(8192) is not first
    for buffer in (first, second, third):
        pool.give_back(buffer)
    assert len(pool._free) == 2  # a few kept for the next chunks, the rest freed
    assert type(pool.take(100)) is bytearray


def test_a_buffer_whose_write_failed_comes_back_too(tmp_path):
    pool = direct_io.PayloadBuffers(size=1 << 20, keep=2)
    writer = BackgroundWriter(FullAfter(room=0), buffers=pool)
    buffer = pool.take(1 << 20)
    writer.add(tmp_path / "d.part", 0, buffer)
    with pytest.raises(OSError):
        writer.wait(tmp_path / "d.part")
    assert pool.take(1 << 20) is buffer


def test_a_write_now_is_done_in_the_callers_thread_unless_the_file_has_writes_queued(tmp_path):
    """`write_now` writes and renames at once (the seconds it took), leaves a file with queued writes to the
    writer thread (None: nothing done), and on a failure cuts the file where it failed and raises."""
    disk = SlowDisk()
    writer = BackgroundWriter(disk)
    disk.go.set()
    data = os.urandom(300 << 10)
    seconds = writer.write_now(tmp_path / ".a.part", 0, data,
                               then=lambda: os.replace(tmp_path / ".a.part", tmp_path / "a"))
    assert seconds is not None and seconds >= 0 and (tmp_path / "a").read_bytes() == data
    disk.go.clear()
    writer.add(tmp_path / ".b.part", 0, data[:1000])  # held by the slow disk
    assert writer.write_now(tmp_path / ".b.part", 1000, data[1000:]) is None
    disk.go.set()
    writer.wait_all()
    assert (tmp_path / ".b.part").read_bytes() == data[:1000]
    full = BackgroundWriter(FullAfter(room=100 << 10))
    assert full.write_now(tmp_path / ".c.part", 0, data[:60 << 10]) is not None
    with pytest.raises(OSError):
        full.write_now(tmp_path / ".c.part", 20 << 10, data)
    assert (tmp_path / ".c.part").stat().st_size == 20 << 10  # cut where the failed write began


def test_a_fault_in_a_write_reaches_the_waiter_instead_of_stopping_the_writer(tmp_path):
    """Not only an OSError: any exception of a write is raised to whoever waits for the file, and the writer
    thread goes on (it used to end, and every later wait hung)."""
    import threading

    class Faulty(ChunkWriter):
        def write_at(self, path, offset, data):
            if b"boom" in bytes(data):
                raise ValueError("a fault of the writer")
            super().write_at(path, offset, data)

    writer, raised = BackgroundWriter(Faulty()), []

    def both():
        writer.add(tmp_path / "f.part", 0, b"boom")
        try:
            writer.wait(tmp_path / "f.part")
        except ValueError as exc:
            raised.append(exc)
        writer.add(tmp_path / "g.part", 0, b"fine")
        writer.wait(tmp_path / "g.part")

    waiter = threading.Thread(target=both, daemon=True)
    waiter.start()
    waiter.join(10)
    assert not waiter.is_alive() and len(raised) == 1
    assert (tmp_path / "g.part").read_bytes() == b"fine"
