"""`fetch_files` on a real TLS worker (tiny profile) on 127.0.0.1: a job folder's files in one request,
sent back to back from the offsets asked, bad names refused before any byte goes, a missing or linked
file ending the reply with one line, and a token revoked while the files stream stopping the reply."""

from __future__ import annotations

import os
import socket
import ssl
import subprocess
import sys
import time

import pytest
from scail_fixtures import REPO
from test_shared_worker import Client
from test_worker import WorkerProcess

import protocol
from backend.service.identities import Entry, hash_token, write_entries

pytestmark = pytest.mark.slow
FOLDER = "streamed_job"


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    home = tmp_path_factory.mktemp("fetch_files")
    tokens = {name: f"{name}-token-{'y' * 20}" for name in ("boss", "lead")}
    write_entries(home / "tokens", {name: Entry(name, "admin", hash_token(token)) for name, token in tokens.items()})
    server = WorkerProcess("--model", "tiny", "--device", "cpu", "--jobs-root", str(home / "jobs"),
                           "--listen", "127.0.0.1:0", "--tls", "--tokens", str(home / "tokens"),
                           env={"XDG_CONFIG_HOME": str(home / "config")})
    server.port = int(server.wait_stderr(r"listening on 127\.0\.0\.1:(\d+) with TLS").group(1))
    server.home, server.tokens = home, tokens
    folder = home / "jobs" / FOLDER
    (folder / "frames").mkdir(parents=True)
    rng = __import__("random").Random(5)
    for k in range(6):
        (folder / "frames" / f"frame_{k:06d}.png").write_bytes(rng.randbytes(rng.randrange(1, 300_000)))
    (folder / "frames" / "empty.png").write_bytes(b"")
    (folder / "preview.mp4").write_bytes(rng.randbytes(9 << 20))  # three binary chunks
    (folder / "manifest.json").write_text('{"frames": 6}')
    yield server
    if server.proc.poll() is None:
        assert Client(server.port, tokens["boss"]).request("shutdown")["type"] == "ok"
        assert server.proc.wait(60) == 0
    assert not server.not_protocol


def received(client: Client, replies: list[dict], count: int) -> list[dict]:
    """The first `count` replies of a stream (waits for them), then a moment to show nothing more came."""
    client.wait(lambda: len(replies) >= count)
    time.sleep(0.3)
    return list(replies)


def test_every_file_comes_back_to_back_from_its_offset_then_ok(worker):
    folder = worker.home / "jobs" / FOLDER
    boss = Client(worker.port, worker.tokens["boss"])
    asked = [("frames/frame_000000.png", 0), ("preview.mp4", 5_000_000), ("frames/empty.png", 0),
             ("frames/frame_000003.png", 10**9), ("manifest.json", 3)]  # 10**9: past its end
    replies = boss.stream("fetch_files", job_dir=FOLDER, files=[{"name": n, "offset": o} for n, o in asked])
    boss.wait(lambda: replies and replies[-1]["type"] != "file_data")
    assert replies[-1]["type"] == "ok" and replies[-1]["request"] == "fetch_files", replies[-1]
    pieces = replies[:-1]
    assert [p["name"] for p in pieces] == ["frames/frame_000000.png", "preview.mp4", "preview.mp4",
                                           "frames/empty.png", "frames/frame_000003.png", "manifest.json"]
    got: dict[str, bytes] = {}
    for piece in pieces:
        data = piece[protocol.PAYLOAD_FIELD]
        assert isinstance(data, bytes) and "data" not in piece  # binary frames
        got.setdefault(piece["name"], b"")
        start = next(o for n, o in asked if n == piece["name"])
        start = 0 if start > (folder / piece["name"]).stat().st_size else start
        assert piece["offset"] == start + len(got[piece["name"]])  # in order, no gap
        got[piece["name"]] += data
        assert piece["size"] == (folder / piece["name"]).stat().st_size
    for name, offset in asked:
        whole = (folder / name).read_bytes()
        assert got[name] == (whole if offset > len(whole) else whole[offset:]), name  # a short file: sent whole
    assert [p["eof"] for p in pieces] == [True, False, True, True, True, True]
    boss.close()


def test_fetch_changed_lists_the_folder_then_sends_what_is_not_held_from_where_each_part_ends(worker):
    """One request: the listing (as list_files gives it), then every listed file but those held at their
    listed size, each from its part's offset (a part past the file's end: the file whole), then ok."""
    folder = worker.home / "jobs" / FOLDER
    boss = Client(worker.port, worker.tokens["boss"])
    sizes = {p.relative_to(folder).as_posix(): p.stat().st_size for p in folder.rglob("*") if p.is_file()}
    have = [{"name": "frames/frame_000001.png", "size": sizes["frames/frame_000001.png"]},  # held: not sent
            {"name": "frames/frame_000002.png", "size": sizes["frames/frame_000002.png"] + 1}]  # another size: sent
    parts = [{"name": "preview.mp4", "offset": 5_000_000}, {"name": "manifest.json", "offset": 10**9}]
    replies = boss.stream("fetch_changed", job_dir=FOLDER, have=have, parts=parts)
    boss.wait(lambda: replies and replies[-1]["type"] not in ("file_data", "files"))
    assert replies[-1]["type"] == "ok" and replies[-1]["request"] == "fetch_changed", replies[-1]
    listed = boss.request("list_files", job_dir=FOLDER)
    assert replies[0]["type"] == "files" and replies[0]["files"] == listed["files"]
    pieces = replies[1:-1]
    wanted = [entry["name"] for entry in listed["files"] if entry["name"] != "frames/frame_000001.png"]
    assert list(dict.fromkeys(p["name"] for p in pieces)) == wanted
    got: dict[str, bytes] = {}
    for piece in pieces:
        got[piece["name"]] = got.get(piece["name"], b"") + piece[protocol.PAYLOAD_FIELD]
    for name in wanted:
        whole = (folder / name).read_bytes()
        assert got[name] == (whole[5_000_000:] if name == "preview.mp4" else whole), name
    for bad in ({"have": "frames"}, {"have": [{"name": "a"}]}, {"parts": [{"name": "a", "offset": -1}]}):
        replies = boss.stream("fetch_changed", job_dir=FOLDER, **bad)
        assert [r["type"] for r in received(boss, replies, 1)] == ["error"], bad
        assert replies[0]["code"] == "bad_request" and "fetch_changed" in replies[0]["message"]
    boss.close()


def test_a_bad_name_is_refused_before_any_byte_and_a_missing_or_linked_file_ends_the_reply(worker, tmp_path):
    boss = Client(worker.port, worker.tokens["boss"])
    for bad in ("../tokens", "/etc/passwd", ".scail2-job.lock", "frames/../../tokens"):
        replies = boss.stream("fetch_files", job_dir=FOLDER, files=[{"name": "manifest.json"}, {"name": bad}])
        assert [r["type"] for r in received(boss, replies, 1)] == ["error"], bad
        assert replies[0]["code"] == "bad_request"
    secret = tmp_path / "secret.txt"
    secret.write_text("BEGIN secret")
    linked = worker.home / "jobs" / FOLDER / "linked.txt"
    linked.symlink_to(secret)
    try:
        for stop in ("missing.png", "linked.txt"):
            replies = boss.stream("fetch_files", job_dir=FOLDER, files=[
                {"name": "manifest.json"}, {"name": stop}, {"name": "frames/frame_000001.png"}])
            got = received(boss, replies, 2)
            assert [r["type"] for r in got] == ["file_data", "error"], got
            assert got[1]["message"] == f"no such file in the job folder: {stop}" and "BEGIN" not in str(got)
    finally:
        linked.unlink()
    for files in ([], [{"name": "manifest.json", "offset": -1}], "manifest.json"):
        replies = boss.stream("fetch_files", job_dir=FOLDER, files=files)
        assert [r["type"] for r in received(boss, replies, 1)] == ["error"]
        assert "fetch_files needs" in replies[0]["message"]
    boss.close()


def test_a_token_revoked_while_files_stream_stops_the_reply(worker):
    """The client asks for 48 MiB and reads nothing; the worker makes only a few MiB ahead of the socket.
    Once the token is revoked, the next file is not sent: an unauthorized line, and the connection closes."""
    big = worker.home / "jobs" / "big_job"
    big.mkdir()
    for k in range(48):
        (big / f"part_{k:02d}.bin").write_bytes(os.urandom(1 << 20))
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
    sock = context.wrap_socket(socket.create_connection(("127.0.0.1", worker.port), timeout=60))
    token = worker.tokens["lead"]
    sock.sendall(protocol.encode_message("hello", token=token, framing="binary").encode())
    sock.sendall(protocol.encode_message("fetch_files", token=token, request_id="all", job_dir="big_job",
                                         files=[{"name": f"part_{k:02d}.bin"} for k in range(48)]).encode())
    time.sleep(1.0)  # the worker fills the socket's buffers and its own few MiB ahead, then waits
    run = subprocess.run([sys.executable, "-m", "backend", "tokens", "--file", str(worker.home / "tokens"),
                          "revoke", "lead"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    frames = protocol.FrameReader(1 << 20, binary=True)
    buffer, messages = bytearray(1 << 16), []
    while True:
        count, completed = frames.receive(sock.recv_into, buffer)
        if not count:
            break  # the worker closed the connection
        messages += [protocol.decode_message(line) for line, _ in completed]
    sock.close()
    kinds = [m["type"] for m in messages]
    assert kinds[0] == "capabilities" and kinds[-1] == "error" and messages[-1]["code"] == "unauthorized"
    sent = [m for m in messages if m["type"] == "file_data"]
    assert 0 < len(sent) < 40, len(sent)  # the files made before the revocation, not the rest
    assert [m["name"] for m in sent] == [f"part_{k:02d}.bin" for k in range(len(sent))]
    worker.wait_stderr(r"its token was revoked; its fetch_files stopped")  # the administrator sees why


def test_chunks_sent_back_to_back_each_with_a_line_after_it_are_all_taken_in_order(worker):
    """The worker reads an upload's chunk on while its records are there; the line after each chunk
    (and the next chunk's header) is still read whole, and every request answered in order."""
    data = os.urandom(3 * (4 << 20) + 1234)
    sha = __import__("hashlib").sha256(data).hexdigest()
    boss = Client(worker.port, worker.tokens["boss"])
    chunk = boss.capabilities["chunk_bytes"]
    wire, ids = b"", []
    for offset in range(0, len(data), chunk):
        piece = data[offset:offset + chunk]
        ids += [f"put-{offset}", f"ping-{offset}"]
        wire += protocol.encode_message("blob_put", token=worker.tokens["boss"], request_id=ids[-2], sha256=sha,
                                        size=len(data), offset=offset, payload=len(piece)).encode() + piece
        wire += protocol.encode_message("ping", token=worker.tokens["boss"], request_id=ids[-1]).encode()
    boss.write(wire)  # all of it in one go
    replies = [boss.wait(lambda request_id=request_id: boss.replies.pop(request_id, None)) for request_id in ids]
    assert [r["type"] for r in replies] == ["blob", "ok"] * 4
    assert replies[-2]["complete"] and replies[-2]["have"] == len(data)
    assert (worker.home / "jobs" / ".blobs" / sha).read_bytes() == data
    boss.close()
