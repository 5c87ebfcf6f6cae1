"""A remote (TLS, transfer-mode) worker in a real subprocess with the tiny profile, spoken to over
real TLS on loopback: the certificate and token it makes, what a remote client may not name,
uploads that resume after a cut and are never sent twice, results fetched back byte for byte,
and wrong tokens slowed down, closed and shut out."""

from __future__ import annotations

import base64
import hashlib
import os
import re
import socket
import ssl
import time
from pathlib import Path

import pytest
from test_worker import WorkerProcess, small_job

import protocol
from backend.service.blobs import CHUNK_BYTES

pytestmark = pytest.mark.slow


class TlsConnection:
    """A TLS client that trusts nothing but remembers the certificate's fingerprint."""

    def __init__(self, port: int, token: str | None):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60))
        der = self.sock.getpeercert(binary_form=True)
        digest = hashlib.sha256(der).hexdigest().upper()
        self.fingerprint = ":".join(digest[i:i + 2] for i in range(0, 64, 2))
        self.file = self.sock.makefile("rb")
        self.token = token

    def reply(self, kind: str, **fields) -> dict:
        fields.setdefault("token", self.token)
        self.sock.sendall(protocol.encode_message(kind, **fields).encode())
        return self.receive()

    def receive(self) -> dict:
        line = self.file.readline()
        assert line, "connection closed"
        return protocol.decode_message(line)

    def close(self) -> None:
        self.file.close()
        self.sock.close()


@pytest.fixture(scope="module")
def remote(tmp_path_factory):
    home = tmp_path_factory.mktemp("remote")
    server = WorkerProcess("--model", "tiny", "--device", "cpu", "--jobs-root", str(home / "jobs"),
                           "--listen", "127.0.0.1:0", "--tls", env={"XDG_CONFIG_HOME": str(home / "config")})
    server.port = int(server.wait_stderr(r"listening on 127\.0\.0\.1:(\d+) with TLS").group(1))
    server.fingerprint = server.wait_stderr(r"fingerprint: ([0-9A-F:]{95})").group(1)
    server.token = server.wait_stderr(r"shown only this once; give it to the add-on\): (\S+)").group(1)
    server.home = home
    yield server
    if server.proc.poll() is None:
        connection = TlsConnection(server.port, server.token)
        assert connection.reply("shutdown")["type"] == "ok"
        assert server.proc.wait(60) == 0
    assert not server.not_protocol


def upload(connection: TlsConnection, data: bytes, stop_after: int | None = None) -> tuple[str, int]:
    """Upload `data` as a blob from where the worker stands; (sha256, bytes sent). Stops after `stop_after` chunks."""
    sha = hashlib.sha256(data).hexdigest()
    have = connection.reply("blob_status", sha256=sha)["have"]
    sent = chunks = 0
    while have < len(data):
        if stop_after is not None and chunks == stop_after:
            break
        start = max(have, 0)
        piece = data[start:start + CHUNK_BYTES]
        answer = connection.reply("blob_put", sha256=sha, size=len(data), offset=start,
                                  data=base64.b64encode(piece).decode())
        assert answer["type"] == "blob", answer
        have, sent, chunks = answer["have"], sent + len(piece), chunks + 1
    return sha, sent


def fetch_all(connection: TlsConnection, job_dir: str, into: Path) -> dict[str, bytes]:
    listed = connection.reply("list_files", job_dir=job_dir)
    assert listed["type"] == "files", listed
    files = {}
    for entry in listed["files"]:
        data, offset = b"", 0
        while True:
            piece = connection.reply("fetch", job_dir=job_dir, name=entry["name"], offset=offset)
            assert piece["type"] == "file_data", piece
            data += base64.b64decode(piece["data"])
            offset = len(data)
            if piece["eof"]:
                break
        files[entry["name"]] = data
    return files


def test_the_tls_worker_shows_its_certificate_and_makes_a_strong_token(remote):
    connection = TlsConnection(remote.port, remote.token)
    assert connection.fingerprint == remote.fingerprint
    assert len(remote.token) >= 40
    hello = connection.reply("hello")
    assert hello["type"] == "capabilities" and hello["mode"] == "transfer"
    key = remote.home / "config" / "scail2" / "worker-tls" / "worker-key.pem"
    assert key.stat().st_mode & 0o077 == 0  # the private key is its owner's only
    connection.close()


def test_a_client_that_never_speaks_on_the_tls_port_is_closed_with_one_log_line(remote):
    silent = socket.create_connection(("127.0.0.1", remote.port), timeout=60)
    port = silent.getsockname()[1]
    ping = TlsConnection(remote.port, remote.token)
    assert ping.reply("ping")["type"] == "ok"  # others are served meanwhile
    ping.close()
    assert silent.recv(100) == b""  # closed once the handshake's time is up
    silent.close()
    assert "no TLS handshake within the time allowed" in remote.wait_stderr(rf"client 127\.0\.0\.1:{port}: .*").group(0)
    time.sleep(0.5)
    assert len([line for line in remote.stderr if f":{port}" in line]) == 1


def test_a_remote_client_names_no_server_files_and_no_folder_outside_the_root(remote, tmp_path):
    connection = TlsConnection(remote.port, remote.token)
    existing, missing = small_job(driving="/etc/passwd"), small_job(driving="/no/such/file.mp4")
    answers = [connection.reply("submit", job=job) for job in (existing, missing)]
    assert all(a["code"] == "bad_input" for a in answers)
    assert answers[0]["message"] == answers[1]["message"]  # nothing tells which one exists
    assert "/etc/passwd" not in answers[0]["message"]
    outside = tmp_path / "elsewhere"
    for job_dir in (str(outside), "../escape", "/etc/scail2", ".blobs"):
        answer = connection.reply("submit", job=existing, job_dir=job_dir)
        assert answer["code"] == "bad_input" and "jobs root" in answer["message"], answer
    assert not outside.exists() and not (remote.home / "escape").exists()
    for name in ("../../config/scail2/worker-tls/worker-key.pem", "/etc/passwd", ".scail2-job.lock"):
        answer = connection.reply("fetch", job_dir="x", name=name)
        assert answer["type"] == "error" and "BEGIN" not in str(answer), answer
    connection.close()


def test_a_fetch_follows_no_link_out_of_a_job_folder_even_one_made_after_the_folder_was_seen(remote, tmp_path):
    """A fetch reuses a job folder it resolved before (one lstat a request), but a linked file or folder
    inside it, or the folder itself swapped for a link, is answered as a file that is not there."""
    secret = tmp_path / "secret"
    (secret / "frames").mkdir(parents=True)
    (secret / "key.txt").write_text("BEGIN secret")
    (secret / "frames" / "f.png").write_text("BEGIN secret frame")
    folder = remote.home / "jobs" / "linked_job"
    (folder / "frames").mkdir(parents=True)
    (folder / "manifest.json").write_text("{}")
    (folder / "key.txt").symlink_to(secret / "key.txt")
    (folder / "outside").symlink_to(secret / "frames")
    (folder / "frames" / "f.png").write_text("a frame")
    (folder / ".scail2-job.lock").write_text("")
    os.mkfifo(folder / "frames" / "pipe.png")  # opened for reading, it would wait for a writer
    connection = TlsConnection(remote.port, remote.token)
    listed = connection.reply("list_files", job_dir="linked_job")["files"]
    assert [entry["name"] for entry in listed] == ["frames/f.png", "manifest.json"]  # no link, FIFO or hidden file
    assert connection.reply("fetch", job_dir="linked_job", name="manifest.json")["type"] == "file_data"
    for name in ("key.txt", "outside/f.png", "frames/pipe.png", "frames"):
        answer = connection.reply("fetch", job_dir="linked_job", name=name)
        assert answer["type"] == "error" and "no such file in the job folder" in answer["message"], answer
    moved = remote.home / "jobs" / "linked_job_moved"
    folder.rename(moved)
    folder.symlink_to(secret)  # the folder seen before is now a link out of the jobs root
    answer = connection.reply("fetch", job_dir="linked_job", name="key.txt")
    assert answer["type"] == "error" and "BEGIN" not in str(answer), answer
    connection.close()


def test_an_upload_resumes_after_a_cut_is_never_sent_twice_and_the_result_comes_back_whole(remote, tmp_path):
    spec = small_job()
    driving, reference = Path(spec["driving"]).read_bytes(), Path(spec["reference"]).read_bytes()
    big = hashlib.sha512(b"seed").digest() * (CHUNK_BYTES * 5 // 128)  # 2.5 chunks
    first = TlsConnection(remote.port, remote.token)
    big_sha, sent_before = upload(first, big, stop_after=1)
    first.close()  # cut after one chunk

    second = TlsConnection(remote.port, remote.token)
    assert second.reply("blob_status", sha256=big_sha)["have"] == CHUNK_BYTES
    stale = second.reply("blob_put", sha256=big_sha, size=len(big), offset=0, data=base64.b64encode(b"x").decode())
    assert stale["code"] == "bad_request" and f"send from {CHUNK_BYTES}" in stale["message"]  # it has that chunk
    _, sent_after = upload(second, big)
    assert sent_before + sent_after == len(big)  # every byte went over once
    assert upload(second, big)[1] == 0  # the worker has it: nothing is sent again
    sha, _ = upload(second, driving)
    ref_sha, _ = upload(second, reference)
    assert upload(second, driving)[1] == 0

    job = dict(spec, driving=protocol.blob_ref(sha, "driving.mp4"), reference=protocol.blob_ref(ref_sha, "ref.jpg"))
    queued = second.reply("submit", job=job)
    assert queued["type"] == "queued", queued
    job_dir = Path(queued["job_dir"])
    assert job_dir.parent == remote.home / "jobs"
    while (event := second.receive())["type"] not in ("done", "error"):
        pass
    assert event["type"] == "done", event
    files = fetch_all(second, job_dir.name, tmp_path)
    frames = sorted(name for name in files if name.startswith("frames/"))
    assert len(frames) == 5 and "manifest.json" in files
    for name in frames:
        assert files[name] == (job_dir / name).read_bytes()
    second.close()


def test_wrong_tokens_are_slowed_closed_and_a_burst_shuts_the_address_out(remote):
    for attempt in range(5):
        connection = TlsConnection(remote.port, "wrong-token-wrong-token")
        started = time.monotonic()
        answer = connection.reply("hello")
        assert answer["code"] == "unauthorized" and time.monotonic() - started >= 0.9
        assert connection.file.readline() == b""  # closed
        connection.close()
    shut_out = TlsConnection(remote.port, remote.token)  # even with the right token, for a while
    refusal = shut_out.receive()
    assert refusal["code"] == "unauthorized" and re.search(r"too many failed authentications", refusal["message"])
    assert shut_out.file.readline() == b""
    remote.wait_stderr(r"127\.0\.0\.1 is shut out for 300 s")
    remote.proc.kill()  # the fixture cannot say goodbye from this address any more
    remote.proc.wait(30)

