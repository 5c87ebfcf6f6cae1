"""The worker's blob store on a real folder: resumable writes, hash check, size cap and LRU eviction."""

from __future__ import annotations

import hashlib
import os
import time

import pytest

from backend.service.blobs import BlobError, BlobStore


def sha(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def put_all(store: BlobStore, data: bytes, piece: int = 4) -> None:
    key, offset = sha(data), max(store.have(sha(data)), 0)
    while offset < len(data):
        offset = store.put(key, len(data), offset, data[offset:offset + piece])


def test_a_blob_is_written_in_order_checked_and_linked_under_its_name(tmp_path):
    store = BlobStore(tmp_path / "blobs", cap=1000)
    data = b"0123456789"
    key = sha(data)
    assert store.have(key) == -1
    assert store.put(key, 10, 0, data[:4]) == 4
    with pytest.raises(BlobError, match="send from 4"):
        store.put(key, 10, 0, data[:4])  # resent: refused, with where to go on
    with pytest.raises(BlobError, match="send from 4"):
        store.put(key, 10, 8, data[8:])  # a gap
    assert store.put(key, 10, 4, data[4:]) == 10 and store.is_complete(key)
    link = store.link(key, "clip.mp4")
    assert link.name == "clip.mp4" and link.read_bytes() == data
    with pytest.raises(BlobError, match="plain file name"):
        store.link(key, "../escape.mp4")

    wrong = sha(b"something else")
    store.put(wrong, 3, 0, b"ab")
    with pytest.raises(BlobError, match="SHA-256"):
        store.put(wrong, 3, 2, b"c")
    assert store.have(wrong) == -1  # the bad bytes are gone: sent again from 0


def test_the_least_recently_used_blobs_go_first_and_held_ones_stay(tmp_path):
    store = BlobStore(tmp_path / "blobs", cap=250)
    a, b, c, d = (bytes([k]) * 100 for k in range(4))
    for data in (a, b):
        put_all(store, data, piece=100)
    past = time.time() - 100
    os.utime(store.root / sha(a), (past, past))
    os.utime(store.root / sha(b), (past + 10, past + 10))
    store.link(sha(a), "a.png")  # used now: b is the least recently used
    put_all(store, c, piece=100)  # 300 bytes > 250: b goes
    assert store.is_complete(sha(a)) and not store.is_complete(sha(b)) and store.is_complete(sha(c))
    store.hold([sha(a), sha(c)])  # a queued job reads them
    put_all(store, d, piece=100)
    assert store.is_complete(sha(a)) and store.is_complete(sha(c)) and store.is_complete(sha(d))
    store.release([sha(a), sha(c)])
    put_all(store, b, piece=100)
    assert store.total() <= 250 and store.is_complete(sha(b))
    assert not (store.root / "links" / sha(a)).exists() or store.is_complete(sha(a))


def test_the_store_is_listed_only_when_its_cap_may_be_reached(tmp_path, monkeypatch):
    """Listing every blob for each one completed made an image sequence's upload slower file by file; and a
    full store is brought down to EVICT_TO of its cap, so it is not listed again for the next blob either."""
    store = BlobStore(tmp_path / "blobs", cap=1000)
    listings = []
    listing = store._blobs
    monkeypatch.setattr(store, "_blobs", lambda: listings.append(1) or listing())
    blobs = [bytes([k]) * 100 for k in range(30)]
    for data in blobs[:10]:  # 1000 bytes: up to the cap, listed once (the first time, to learn what is there)
        put_all(store, data, piece=40)
    assert len(listings) == 1
    put_all(store, blobs[10], piece=40)  # over the cap: listed, and down to 900 bytes
    assert len(listings) == 2 and listing_total(store) == 900 and store.is_complete(sha(blobs[10]))
    put_all(store, blobs[11], piece=40)  # room for it: not listed
    assert len(listings) == 2 and listing_total(store) == 1000
    for data in blobs[12:]:  # 1800 bytes more: listed once every other blob, the cap kept after each
        put_all(store, data, piece=40)
        assert listing_total(store) <= 1000 and store.is_complete(sha(data))
    assert len(listings) == 2 + 9
    put_all(store, blobs[29], piece=40)  # the same bytes again: nothing new, nothing listed
    assert len(listings) == 2 + 9


def listing_total(store: BlobStore) -> int:
    """The bytes of every blob and part file in the store's folders, counted here (not by the store)."""
    folders = [store.root, *(p for p in (store.root / "parts").glob("*") if p.is_dir())]
    return sum(p.stat().st_size for folder in folders for p in folder.iterdir()
               if p.is_file() and not p.name.endswith(".owners"))
