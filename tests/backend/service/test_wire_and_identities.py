"""The pieces of a shared worker on their own: the frame reader both ends use, the tokens file
(hashes only, re-read when it changes), and the round-robin queue."""

from __future__ import annotations

import os
import time

import protocol
from backend.service import identities
from backend.service.identities import Entry, TokenBook, hash_token, write_entries
from backend.service.jobs import Job
from backend.service.quotas import FairQueue


def test_frames_and_lines_come_out_whole_however_the_bytes_are_cut():
    stream = (b'{"v":1,"type":"ping"}\n' + b'{"v":1,"type":"blob_put","payload":5}\n' + b"a\nb\nc"
              + b'{"v":1,"type":"ping","payload":-4}\n' + b"x" * 300 + b"\n" + b'{"v":1,"type":"ok"}\n')
    for cut in (1, 3, 7, 64, len(stream)):
        reader = protocol.FrameReader(100, binary=True)
        out = [item for start in range(0, len(stream), cut) for item in reader.feed(stream[start:start + cut])]
        assert out == [(b'{"v":1,"type":"ping"}', None), (b'{"v":1,"type":"blob_put","payload":5}', b"a\nb\nc"),
                       (b'{"v":1,"type":"ping","payload":-4}', None), (None, None), (b'{"v":1,"type":"ok"}', None)]
    lines_only = protocol.FrameReader(100)  # before a hello asked for frames, a payload count is just a field
    assert list(lines_only.feed(b'{"payload":2}\nab\n')) == [(b'{"payload":2}', None), (b"ab", None)]


def test_tokens_are_kept_as_hashes_and_a_change_to_the_file_counts_at_once(tmp_path):
    path = tmp_path / "tokens"
    write_entries(path, {"ann": Entry("ann", "artist", hash_token("ann-secret-token-123")),
                         "lead": Entry("lead", "admin", hash_token("lead-secret-token-12"))})
    assert "ann-secret" not in path.read_text() and oct(path.stat().st_mode & 0o777) == "0o600"
    book = TokenBook(path, shared="the-old-shared-token")
    ann = book.identify("ann-secret-token-123")
    assert ann.name == "ann" and not ann.admin and book.identify("lead-secret-token-12").admin
    assert book.identify("the-old-shared-token").name == "" and book.identify("guess") is None
    write_entries(path, {"lead": Entry("lead", "admin", hash_token("lead-secret-token-12"))})  # ann revoked
    assert book.identify("ann-secret-token-123") is None and not book.is_current(ann)
    path.write_text("lead admin not-a-hash\n")  # damaged: no named token is taken until it is fixed
    _still_for(path, 1.0)
    assert book.identify("lead-secret-token-12") is None
    assert TokenBook(None, None).identify(None).admin  # a private worker: one user who sees everything


def _still_for(path, seconds: float) -> None:
    """Make `path` look unchanged for `seconds` (its modification time set back)."""
    then = time.time() - seconds
    os.utime(path, (then, then))


def test_a_tokens_file_caught_mid_save_by_an_editor_refuses_nobody_until_it_has_been_still(tmp_path):
    path = tmp_path / "tokens"
    write_entries(path, {"ann": Entry("ann", "artist", hash_token("ann-secret-token-123"))})
    whole = path.read_text()
    book = TokenBook(path)
    ann = book.identify("ann-secret-token-123")
    inode = path.stat().st_ino
    for caught in ("", whole[: len(whole) - 20]):  # emptied by the editor; then half of it written
        path.write_text(caught)
        assert path.stat().st_ino == inode  # saved in place, as nano and many editors do
        assert book.identify("ann-secret-token-123") == ann and book.is_current(ann)
    path.write_text(whole)  # the save ends: the file is whole again and counts at once
    assert book.identify("ann-secret-token-123") == ann
    path.rename(tmp_path / "tokens~")  # an editor that moves the old file aside before writing the new one
    assert book.identify("ann-secret-token-123") == ann
    (tmp_path / "tokens~").rename(path)
    assert book.identify("ann-secret-token-123") == ann
    time.sleep(identities.SETTLE_S + 0.1)
    path.rename(tmp_path / "tokens~")  # gone again, a while later: a new save, given its own moment
    assert book.identify("ann-secret-token-123") == ann
    (tmp_path / "tokens~").rename(path)
    path.write_text("")  # emptied on purpose: once it has been still, nobody named is taken
    _still_for(path, 1.0)
    assert book.identify("ann-secret-token-123") is None and not book.is_current(ann)


def test_only_a_whole_file_without_an_artist_stops_their_jobs(tmp_path):
    """`revoked` names the owners whose jobs the worker stops: those a whole file, still for SETTLE_S, leaves out.
    A new token for the same artist (`--replace`), the unnamed `--token` identity, a file damaged or gone, or one
    caught at a line's end by an editor writing it in place stop no one."""
    path = tmp_path / "tokens"
    entries = {name: Entry(name, "artist", hash_token(f"{name}-secret-token-1")) for name in ("ann", "ben")}
    write_entries(path, entries)
    book = TokenBook(path, shared="the-old-shared-token")
    owners = {"ann", "ben", "", "never-named"}
    _still_for(path, 1.0)
    assert book.revoked(owners) == {"never-named"}
    write_entries(path, {**entries, "ann": Entry("ann", "artist", hash_token("ann-new-token-12345"))})  # replaced
    _still_for(path, 1.0)
    assert book.revoked({"ann", "ben", ""}) == set()
    whole = path.read_text()
    path.write_text(whole[: whole.index("ben ")])  # an editor's in-place save, caught at the end of ann's line
    assert book.identify("ben-secret-token-1") is None  # refused for that moment (as a revoked token would be)
    assert book.revoked(owners) == set()  # but nobody's jobs stop on it
    path.write_text(whole)  # the save goes on
    assert book.identify("ben-secret-token-1").name == "ben" and book.identify("ann-new-token-12345").name == "ann"
    path.write_text("ann artist not-a-hash\n")  # damaged: every named token refused, but no job stopped
    _still_for(path, 1.0)
    assert book.identify("ben-secret-token-1") is None and book.revoked(owners) == set()
    path.unlink()
    assert book.revoked(owners) == set()
    time.sleep(identities.SETTLE_S + 0.1)
    assert book.revoked(owners) == set()  # gone for good: still no one's jobs stopped
    write_entries(path, {"ben": entries["ben"]})  # ann revoked, by the tokens command
    assert book.identify("ann-new-token-12345") is None and book.revoked(owners) == set()  # refused at once
    _still_for(path, 1.0)
    assert book.revoked(owners) == {"ann", "never-named"}  # her jobs stop half a second later
    write_entries(path, {})  # the last artist revoked: the file keeps its heading line, and is whole
    _still_for(path, 1.0)
    assert book.revoked(owners) == {"ann", "ben", "never-named"}
    # Saved by an editor that adds a BOM and leaves off the last newline (Notepad, VS Code): ben again, ann not.
    path.write_bytes(b"\xef\xbb\xbf" + entries["ben"].line().encode())
    assert book.revoked(owners) == {"ann", "ben", "never-named"}  # maybe cut mid-line: the last table stands
    _still_for(path, 1.0)
    assert book.revoked(owners) == {"ann", "never-named"} and book.identify("ben-secret-token-1").name == "ben"
    assert TokenBook(None, "the-old-shared-token").revoked({"ann", ""}) == set()  # no named tokens


def test_the_queue_takes_turns_between_owners_in_submission_order_within_each(tmp_path):
    queue = FairQueue()
    jobs = [Job(f"{owner}{k}", {}, tmp_path / f"{owner}{k}", owner=owner) for owner in "abc" for k in range(3)]
    for job in jobs:
        queue.append(job)
    assert [job.id for job in queue] == ["a0", "b0", "c0", "a1", "b1", "c1", "a2", "b2", "c2"]
    assert queue.popleft().id == "a0"
    queue.append(Job("a3", {}, tmp_path / "a3", owner="a"))
    assert [job.id for job in queue][:4] == ["b0", "c0", "a1", "b1"]  # a had its turn: it waits for b and c
    assert queue.queued_of("a") == 3 and len(queue) == 9
