"""Writing a transfer's bytes at offsets, past the page cache where the file system allows it."""

from __future__ import annotations

import os

import pytest

from protocol import direct_io
from protocol.direct_io import ALIGN, DIRECT_FROM_BYTES, ChunkWriter


def pieces(total: int, size: int) -> list[bytes]:
    data = os.urandom(total)
    return [data[k:k + size] for k in range(0, total, size)]


@pytest.mark.parametrize("piece_size", [DIRECT_FROM_BYTES * 2, DIRECT_FROM_BYTES + 1000, 5000])
def test_pieces_appended_in_order_make_the_file_whatever_their_alignment(tmp_path, piece_size):
    writer = ChunkWriter()
    parts = pieces(3 * DIRECT_FROM_BYTES + 123, piece_size)
    target = tmp_path / "out.bin"
    for part in parts:
        writer.append(target, part)
    writer.close()
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
