"""A worker a studio shares: three named artists and an admin against one real TLS worker on
127.0.0.1 (tiny profile), each through their own real TLS connection. Each lists, fetches and
cancels only their own jobs (another's job id gets the answer a made-up one gets), a token revoked
with `python -m backend tokens` is refused at once on an open connection (and that artist's jobs stop),
3 x 4 queued jobs start in turns, an artist's quota is enforced, and faults on the wire are answered in one line."""

from __future__ import annotations

import hashlib
import json
import os
import queue
import re
import select
import socket
import ssl
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from concurrently import at_once
from scail_fixtures import REPO
from test_remote_worker import TlsConnection
from test_worker import DRIVING, REFERENCE, WorkerProcess, small_job, tiny_lora_file

import protocol
from backend.service.identities import Entry, hash_token, write_entries

pytestmark = pytest.mark.slow
ARTISTS = ("alice", "bob", "carol")
TIMEOUT = 240.0
READ_WAIT_S = 0.2
WORKER_LOG: list[str] = []  # the studio worker's stderr, for failure messages


class Client:
    """One artist's TLS connection: replies matched by request_id, every other message kept in order."""

    def __init__(self, port: int, token: str, framing: str | None = protocol.FRAMING_BINARY):
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
        context.check_hostname, context.verify_mode = False, ssl.CERT_NONE
        self.sock = context.wrap_socket(socket.create_connection(("127.0.0.1", port), timeout=60))
        self.sock.settimeout(READ_WAIT_S)  # a read that finds no record yet lets a send go first
        self.token, self.count, self.failure = token, 0, None
        self.replies: dict[str, dict] = {}
        self.streams: dict[str, list[dict]] = {}  # request ids answered by many replies: all of them, in order
        self.events: list[dict] = []
        self.closed = threading.Event()
        self.arrived = threading.Condition()
        self.io = threading.Lock()
        threading.Thread(target=self._read, daemon=True).start()
        self.capabilities = self.request("hello", **({"framing": framing} if framing else {}))

    def _read(self) -> None:
        frames = protocol.FrameReader(64 << 20, binary=True)
        buffer = bytearray(1 << 16)
        try:
            while True:
                if not self.sock.pending() and not select.select([self.sock], [], [], 0.2)[0]:
                    continue
                with self.io:  # an SSL socket is never read and written at once
                    try:
                        count, messages = frames.receive(self.sock.recv_into, buffer)
                    except TimeoutError:
                        continue
                if not count:
                    break
                for line, payload in messages:
                    message = protocol.decode_message(line)
                    if payload is not None:
                        message[protocol.PAYLOAD_FIELD] = bytes(payload)
                    with self.arrived:
                        if message.get("request_id") in self.streams:
                            self.streams[message["request_id"]].append(message)
                        elif message.get("request_id"):
                            self.replies[message["request_id"]] = message
                        else:
                            self.events.append(message)
                        self.arrived.notify_all()
        except (OSError, ValueError) as exc:  # ValueError: closed by the test meanwhile
            self.failure = exc
        finally:
            self.closed.set()
            with self.arrived:
                self.arrived.notify_all()

    def send(self, kind: str, payload: bytes | None = None, **fields) -> str:
        self.count += 1
        request_id = f"{kind}-{self.count}"
        fields.setdefault("token", self.token)
        if payload is not None:
            fields[protocol.PAYLOAD_FIELD] = len(payload)
        self.write(protocol.encode_message(kind, request_id=request_id, **fields).encode() + (payload or b""))
        return request_id

    def write(self, data: bytes) -> None:
        with self.io:
            self.sock.settimeout(60)
            try:
                self.sock.sendall(data)
            finally:
                self.sock.settimeout(READ_WAIT_S)

    def stream(self, kind: str, **fields) -> list[dict]:
        """Send a request answered by many replies; the list they arrive in (filled as they come)."""
        request_id = f"{kind}-{self.count + 1}"
        self.streams[request_id] = []
        assert self.send(kind, **fields) == request_id
        return self.streams[request_id]

    def request(self, kind: str, payload: bytes | None = None, **fields) -> dict:
        request_id = self.send(kind, payload, **fields)
        return self.wait(lambda: self.replies.pop(request_id, None))

    def wait(self, found, timeout: float = TIMEOUT):
        deadline = time.monotonic() + timeout
        with self.arrived:
            while not (result := found()):
                assert time.monotonic() < deadline and not self.closed.is_set(), f"no answer ({self.failure!r}); log: {WORKER_LOG[-12:]}"
                self.arrived.wait(0.5)
        return result

    def upload(self, path: str) -> str:
        data = Path(path).read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        have = max(self.request("blob_status", sha256=sha)["have"], 0)
        while have < len(data):
            piece = data[have:have + self.capabilities["chunk_bytes"]]
            answer = self.request("blob_put", piece, sha256=sha, size=len(data), offset=have)
            assert answer["type"] == "blob", answer
            have = answer["have"]
        return protocol.blob_ref(sha, Path(path).name)

    def ended(self, job_id: str) -> dict | None:
        return next((e for e in self.events if e.get("job") == job_id and e["type"] in ("done", "cancelled", "error")),
                    None)

    def close(self) -> None:
        self.sock.close()


@pytest.fixture(scope="module")
def studio(tmp_path_factory):
    home = tmp_path_factory.mktemp("studio")
    tokens = {name: f"{name}-token-{'x' * 20}" for name in (*ARTISTS, "boss")}
    write_entries(home / "tokens", {name: Entry(name, "admin" if name == "boss" else "artist", hash_token(token))
                                    for name, token in tokens.items()})
    server = WorkerProcess("--model", "tiny", "--device", "cpu", "--jobs-root", str(home / "jobs"),
                           "--listen", "127.0.0.1:0", "--tls", "--tokens", str(home / "tokens"),
                           "--max-queued-per-artist", "4", "--idle-timeout", "3600", env={"XDG_CONFIG_HOME": str(home / "config")})
    server.port = int(server.wait_stderr(r"listening on 127\.0\.0\.1:(\d+) with TLS").group(1))
    server.home, server.tokens = home, tokens
    server.fingerprint = server.wait_stderr(r"fingerprint: ([0-9A-F:]{95})").group(1)
    WORKER_LOG[:] = []
    server.stderr = WORKER_LOG
    yield server
    if server.proc.poll() is None:
        boss = Client(server.port, tokens["boss"])
        assert boss.request("shutdown")["type"] == "ok"
        assert server.proc.wait(60) == 0
    assert not server.not_protocol


def test_a_token_file_holds_hashes_and_no_shared_token_is_made(studio):
    text = (studio.home / "tokens").read_text()
    assert all(token not in text for token in studio.tokens.values())
    assert not any("shown only this once" in line for line in studio.stderr)
    stranger = Client(studio.port, "not-a-token-of-anyone-here")
    assert stranger.capabilities["code"] == "unauthorized" and stranger.closed.wait(30)


def test_faults_on_the_wire_are_one_line_answers(studio):
    alice = Client(studio.port, studio.tokens["alice"])
    # A deeply nested line: bad_request, not a RecursionError and internal_error.
    alice.write(b"[" * 200_000 + b"\n")
    refusal = alice.wait(lambda: next((e for e in alice.events if e["type"] == "error"), None))
    assert refusal["code"] == "bad_request" and "nested too deeply" in refusal["message"]
    # An unknown request type: refused, echoing its request_id.
    alice.write(b'{"v":1,"type":"make_coffee","request_id":"coffee-1","token":"x"}\n')
    refusal = alice.wait(lambda: alice.replies.pop("coffee-1", None))
    assert refusal["type"] == "error" and refusal["code"] == "bad_request"
    assert alice.request("ping")["type"] == "ok"  # still served
    # A plain TCP client on the TLS port: one line in the log, naming what happened.
    plain = socket.create_connection(("127.0.0.1", studio.port), timeout=30)
    port = plain.getsockname()[1]
    plain.sendall(protocol.encode_message("hello").encode())
    told = b""
    while chunk := plain.recv(4096):  # the worker's one plain line, then it hangs up (no reset before it is read)
        told += chunk
    plain.close()
    answer = protocol.decode_message(told)
    assert answer["code"] == "bad_request" and answer["message"] == protocol.wire.TLS_ONLY
    line = studio.wait_stderr(rf"client 127\.0\.0\.1:{port}: .*").group(0)
    assert "not a TLS client" in line
    time.sleep(0.5)
    assert len([x for x in studio.stderr if f":{port}" in x]) == 1
    assert not any("Traceback" in x or "RecursionError" in x for x in studio.stderr)
    alice.close()


def test_artists_see_fetch_and_cancel_only_their_own_jobs_and_take_turns(studio):
    clients = {name: Client(studio.port, studio.tokens[name]) for name in (*ARTISTS, "boss")}
    boss = clients["boss"]
    assert boss.capabilities["framing"] == "binary" and boss.capabilities["admin"] is True
    driving, reference = clients["alice"].upload(DRIVING), clients["alice"].upload(REFERENCE)
    # Alice's uploads are hers: to bob they are as absent as bytes nobody sent, and a job naming
    # them is refused as one naming a blob never uploaded, until he sends the same bytes himself.
    driving_sha = protocol.parse_blob_ref(driving)[0]
    assert clients["bob"].request("blob_status", sha256=driving_sha)["have"] == -1
    assert boss.request("blob_status", sha256=driving_sha)["have"] == Path(DRIVING).stat().st_size  # an admin's
    refused = clients["bob"].request("submit", job=small_job(driving=driving, reference=reference))
    assert refused["type"] == "error" and "is not uploaded" in refused["message"], refused
    unknown = hashlib.sha256(b"never sent").hexdigest()
    made_up = clients["bob"].request("submit", job=small_job(driving=protocol.blob_ref(unknown, protocol.parse_blob_ref(driving)[1]),
                                                             reference=reference))
    assert made_up["message"].replace(unknown[:12], "") == refused["message"].replace(driving_sha[:12], "")
    for name in ("bob", "carol"):
        assert clients[name].upload(DRIVING) == driving and clients[name].upload(REFERENCE) == reference
    blobs = studio.home / "jobs" / ".blobs"
    assert json.loads((blobs / f"{driving_sha}.owners").read_text()) == ["alice", "bob", "carol"]
    assert len([p for p in blobs.iterdir() if p.name == driving_sha]) == 1  # one copy
    # The admin's long job holds the queue while the artists queue theirs.
    blocker = boss.request("submit", job=small_job(driving=driving, reference=reference, frame_end=None, steps=4))
    assert blocker["type"] == "queued", blocker
    queued = {name: [] for name in ARTISTS}
    for name in ARTISTS:
        for k in range(4):
            answer = clients[name].request("submit", job=small_job(driving=driving, reference=reference, seed=k))
            assert answer["type"] == "queued", answer
            queued[name].append(answer["job"])
    over = clients["alice"].request("submit", job=small_job(driving=driving, reference=reference, seed=9))
    assert over["type"] == "error" and over["code"] == protocol.QUOTA_EXCEEDED

    expected = [queued[name][k] for k in range(4) for name in ARTISTS]  # round robin
    listed = boss.request("list_jobs")["jobs"]
    in_queue = sorted((e for e in listed if e["status"] == "queued"), key=lambda e: e["position"])
    assert [e["job"] for e in in_queue] == expected
    mine = [e for e in clients["alice"].request("list_jobs")["jobs"] if e["job"]]
    assert [e["job"] for e in mine] == queued["alice"]
    assert [e["others_ahead"] for e in mine] == [1, 3, 5, 7]  # the admin's job, then bob's and carol's turns

    # Another's job id gets exactly the answer a made-up one gets.
    theirs = clients["bob"].request("cancel", job=queued["alice"][0])
    made_up = clients["bob"].request("cancel", job="0123456789ab")
    assert theirs["code"] == made_up["code"] == "unknown_job"
    assert theirs["message"].replace(queued["alice"][0], "ID") == made_up["message"].replace("0123456789ab", "ID")
    assert clients["carol"].request("resume", job_dir=queued["alice"][0])["type"] == "error"

    boss.send("cancel", job=blocker["job"])  # a running job answers with its `cancelled` event
    boss.wait(lambda: boss.ended(blocker["job"]))
    for name in ARTISTS:
        for job_id in queued[name]:
            assert clients[name].wait(lambda: clients[name].ended(job_id))["type"] == "done"
    started = [e["job"] for e in boss.events if e["type"] == "started" and e["job"] in expected]
    assert started == expected
    for name in ARTISTS:  # each connection got events of its own jobs only
        seen = {e["job"] for e in clients[name].events if e.get("job")}
        assert seen == set(queued[name])

    # Fetching: an artist's folder lists and fetches for them and the admin only.
    alice_folder = Path(next(e for e in boss.events if e.get("job") == queued["alice"][0] and "job_dir" in e)["job_dir"]).name
    own = clients["alice"].request("list_files", job_dir=alice_folder)["files"]
    assert any(f["name"] == "manifest.json" for f in own)
    assert boss.request("list_files", job_dir=alice_folder)["files"] == own
    assert clients["bob"].request("list_files", job_dir=alice_folder)["files"] == []
    theirs = clients["bob"].request("fetch", job_dir=alice_folder, name="manifest.json")
    nothing = clients["alice"].request("fetch", job_dir=alice_folder, name="no_such.json")
    assert theirs["code"] == nothing["code"] and theirs["message"].split(":")[0] == nothing["message"].split(":")[0]
    piece = clients["alice"].request("fetch", job_dir=alice_folder, name="manifest.json")
    assert isinstance(piece[protocol.PAYLOAD_FIELD], bytes) and "data" not in piece  # a binary frame
    assert piece[protocol.PAYLOAD_FIELD] == (studio.home / "jobs" / alice_folder / "manifest.json").read_bytes()
    # Nor through a folder inside hers: nobody had claimed one, so bob's job went into her folder (and
    # came down with hers at her next fetch). A remote job folder is one level under the jobs root.
    before = sorted(p.relative_to(studio.home) for p in (studio.home / "jobs" / alice_folder).rglob("*"))
    for kind, fields in (("submit", {"job": small_job(driving=driving, reference=reference),
                                     "job_dir": f"{alice_folder}/bobs_take"}),
                         ("list_files", {"job_dir": f"{alice_folder}/frames"}),
                         ("fetch", {"job_dir": f"{alice_folder}/frames", "name": "frame_000000.png"})):
        answer = clients["bob"].request(kind, **fields)
        assert answer["type"] == "error" and "one folder directly under" in answer["message"], answer
    assert sorted(p.relative_to(studio.home) for p in (studio.home / "jobs" / alice_folder).rglob("*")) == before
    for client in clients.values():
        client.close()


def test_a_revoked_token_is_refused_at_once_on_an_open_connection(studio):
    carol = Client(studio.port, studio.tokens["carol"])
    assert carol.request("list_jobs")["type"] == "jobs"
    run = subprocess.run([sys.executable, "-m", "backend", "tokens", "--file", str(studio.home / "tokens"),
                          "revoke", "carol"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    refused = carol.request("list_jobs")
    assert refused["type"] == "error" and refused["code"] == "unauthorized"
    assert carol.closed.wait(30)
    again = Client(studio.port, studio.tokens["carol"])
    assert again.capabilities["code"] == "unauthorized" and again.closed.wait(30)
    assert Client(studio.port, studio.tokens["bob"]).request("ping")["type"] == "ok"


def test_revoking_an_artist_stops_their_running_and_queued_jobs_and_the_queue_goes_on(studio):
    """A departed artist's token revoked: their running job stops at its next step and their queued ones never
    start (the admin sees each `cancelled`), while another artist's job queued behind them runs."""
    added = subprocess.run([sys.executable, "-m", "backend", "tokens", "--file", str(studio.home / "tokens"),
                            "add", "dave"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert added.returncode == 0, added.stderr
    dave, bob, boss = (Client(studio.port, token) for token in (added.stdout.strip(), studio.tokens["bob"],
                                                                 studio.tokens["boss"]))
    driving, reference = dave.upload(DRIVING), dave.upload(REFERENCE)
    assert bob.upload(DRIVING) == driving and bob.upload(REFERENCE) == reference
    long_job = dave.request("submit", job=small_job(driving=driving, reference=reference, steps=2000))
    daves = [long_job["job"]] + [dave.request("submit", job=small_job(driving=driving, reference=reference,
                                                                       seed=k))["job"] for k in range(2)]
    bobs = bob.request("submit", job=small_job(driving=driving, reference=reference, seed=7))["job"]
    boss.wait(lambda: any(e["type"] == "progress" and e["job"] == daves[0] and e.get("step") for e in boss.events))
    revoked = subprocess.run([sys.executable, "-m", "backend", "tokens", "--file", str(studio.home / "tokens"),
                              "revoke", "dave"], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert revoked.returncode == 0, revoked.stderr
    ends = [boss.wait(lambda job_id=job_id: boss.ended(job_id), timeout=120) for job_id in daves]
    assert [(e["type"], e["was"]) for e in ends] == [("cancelled", "running"), ("cancelled", "queued"),
                                                       ("cancelled", "queued")]
    assert not any(e["type"] == "started" and e["job"] in daves[1:] for e in boss.events)
    assert bob.wait(lambda: bob.ended(bobs))["type"] == "done"
    assert not [e for e in boss.request("list_jobs")["jobs"] if e.get("owner") == "dave" and e["status"] in
                ("queued", "running")]
    studio.wait_stderr(rf"job {daves[0]} \(generate\) for dave starts in ")  # the log says whose work runs
    studio.wait_stderr(r"client 127\.0\.0\.1:\d+ is boss \(admin\)")
    studio.wait_stderr(rf"job {daves[0]} stops: dave's token was revoked")
    studio.wait_stderr(r"tokens file .* changed: \d+ named tokens; revoked: dave$")  # who, for the administrator
    studio.wait_stderr(rf"job {daves[2]} cancelled before it started: dave's token was revoked")
    assert dave.request("list_jobs")["code"] == "unauthorized" and dave.closed.wait(30)
    for client in (bob, boss):
        client.close()


def test_the_artists_other_sessions_and_an_admin_hear_a_job_join_the_queue(studio):
    """A job queued by one of alice's sessions is said (`queued`, no request id) to her other sessions and to an
    admin, whose lists of the worker's jobs can follow; not to bob, nor twice to the session that asked."""
    alice, alice_elsewhere, bob, boss = (Client(studio.port, studio.tokens[name]) for name in ("alice", "alice", "bob",
                                                                                             "boss"))
    driving, reference = alice.upload(DRIVING), alice.upload(REFERENCE)
    answer = alice.request("submit", job=small_job(driving=driving, reference=reference, steps=2000))
    assert answer["type"] == "queued", answer
    job_id = answer["job"]
    for listener in (alice_elsewhere, boss):
        heard = listener.wait(lambda listener=listener: next((e for e in listener.events if e["type"] == "queued"
                                                              and e["job"] == job_id), None))
        assert heard["job_dir"] == answer["job_dir"] and heard["position"] == answer["position"]
        assert "request_id" not in heard
    boss.request("ping")  # sent after the job was queued: whatever bob would hear has come before its answer
    bob.request("ping")
    assert not [e for e in bob.events if e.get("job") == job_id]
    assert not [e for e in alice.events if e["type"] == "queued"]  # the asking session: its answer only
    boss.send("cancel", job=job_id)
    assert alice.wait(lambda: alice.ended(job_id))["type"] == "cancelled"
    for client in (alice, alice_elsewhere, bob, boss):
        client.close()


def test_an_editor_saving_the_tokens_file_in_place_drops_no_artist(studio):
    """nano and many editors empty the file, then write it: a request in between is still answered."""
    bob = Client(studio.port, studio.tokens["bob"])
    path = studio.home / "tokens"
    whole = path.read_text()
    with open(path, "w"):  # emptied, as an editor's save begins
        assert bob.request("list_jobs")["type"] == "jobs"
    path.write_text(whole[: len(whole) // 2])  # half written
    assert bob.request("list_jobs")["type"] == "jobs"
    path.write_text(whole)
    assert bob.request("list_jobs")["type"] == "jobs" and not bob.closed.is_set()
    assert not any("refusing every named token" in line for line in studio.stderr)


def test_an_old_framing_client_still_uploads_and_fetches_in_base64_lines(studio):
    old = TlsConnection(studio.port, studio.tokens["bob"])  # protocol 1's client: no framing asked
    capabilities = old.reply("hello")
    assert capabilities["framing"] == "lines"
    data = b"an old client's bytes" * 1000
    sha = hashlib.sha256(data).hexdigest()
    import base64

    answer = old.reply("blob_put", sha256=sha, size=len(data), offset=0, data=base64.b64encode(data).decode())
    assert answer["type"] == "blob" and answer["complete"]
    mine = [e for e in old.reply("list_jobs")["jobs"] if e.get("owner") == "bob"]
    folder = Path(mine[0]["job_dir"]).name if mine else None
    if folder is None:  # bob's jobs are done by now: his folders are listed by list_files
        folder = next(p.name for p in (studio.home / "jobs").iterdir() if not p.name.startswith(".")
                      and (p / "manifest.json").is_file() and _owner(studio, p) == "bob")
    piece = old.reply("fetch", job_dir=folder, name="manifest.json")
    assert piece["type"] == "file_data" and "payload" not in piece
    assert base64.b64decode(piece["data"]) == (studio.home / "jobs" / folder / "manifest.json").read_bytes()
    old.close()


def _owner(studio, folder: Path) -> str:
    return json.loads((studio.home / "jobs" / ".owners.json").read_text()).get(str(folder.resolve()), "")


def test_the_transfer_bench_uses_binary_frames_and_reports_its_ratio_to_the_raw_tls_limit():
    run = subprocess.run([sys.executable, str(REPO / "bench" / "transfer.py"), "--mib", "4"], cwd=REPO,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    assert "upload 4 MiB random (binary frames, unnamed uploads)" in run.stdout
    assert "download 4 MiB random (binary frames, unnamed uploads)" in run.stdout
    assert re.search(r"\| limit: raw TLS socket, 4 MiB one way \|", run.stdout)
    assert re.search(r"\| the same, the receiver hashing what arrives .*\| [0-9.]+ \| [0-9.]+ \|  \|$", run.stdout, re.M)
    assert re.search(r"\| fetch 81-frame 512p result .*\| [0-9.]+ \|$", run.stdout, re.M)
    # what an upload costs both ends' CPU, and so the least time it can take where they share the cores
    assert re.search(r"\| CPU of one upload \(medians\): the worker \d+ ms, the add-on \d+ ms; .* of the limit at "
                     r"best\) \| [0-9.]+ \|  \|  \|$", run.stdout, re.M), run.stdout
    assert re.search(r"\| limit: raw TLS socket, the result's 83 files \(\d+ ms of CPU, both ends\) \|", run.stdout)
    assert re.search(r"\| CPU of one fetch \(medians\): the worker \d+ ms, the add-on \d+ ms; .*x the limit's time at "
                     r"best\) \| [0-9.]+ \|  \|  \|$", run.stdout, re.M), run.stdout


def test_the_sequence_bench_sends_frames_on_loopback_and_through_a_delaying_proxy():
    run = subprocess.run([sys.executable, str(REPO / "bench" / "sequence_upload.py"), "--files", "12",
                          "--sequences", "2", "--delay-ms", "2"], cwd=REPO, capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stderr[-2000:]
    for row in (r"sequence 2 on loopback", r"a new sequence, 2 ms each way",
                r"the same again \(the next take: every file known\), 2 ms each way"):
        assert re.search(r"\| " + row + r" \| [0-9.]+ \| [0-9.]+ \|$", run.stdout, re.M), run.stdout


def addon_client():
    """The add-on's own client modules (standard library only), imported as Blender imports them."""
    import types

    if "scail2" not in sys.modules:
        package = types.ModuleType("scail2")
        package.__path__ = [str(REPO)]
        sys.modules["scail2"] = package
    from scail2.core import worker_client

    return worker_client


def test_a_transfer_mode_job_resumes_from_the_local_folder_the_add_on_names(studio, tmp_path):
    client = addon_client().WorkerClient.connect("127.0.0.1", studio.port, token=studio.tokens["bob"],
                                                 fingerprint=studio.fingerprint, timeout=120)
    seen: list[dict] = []

    def until(predicate):
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            seen.extend(client.poll(0.5))
            found = next((m for m in seen if predicate(m)), None)
            if found is not None:
                return found
        raise AssertionError(f"not seen; last messages {seen[-5:]}")

    try:
        assert client.transfers.binary
        local = tmp_path / "shot_010"
        client.submit(small_job(frame_end=None, steps=4), job_dir=local, request_id="first")
        queued = until(lambda m: m.get("request_id") == "first" and m["type"] in ("queued", "error"))
        assert queued["type"] == "queued" and queued["job_dir"] == str(local), queued
        until(lambda m: m.get("job") == queued["job"] and m["type"] == "started")
        client.cancel(queued["job"])
        assert until(lambda m: m.get("job") == queued["job"] and m["type"] in ("cancelled", "done"))["type"] == "cancelled"
        client.send("resume", job_dir=str(local), request_id="again")  # the local folder, as the add-on sends it
        resumed = until(lambda m: m.get("request_id") == "again" and m["type"] in ("queued", "error"))
        assert resumed["type"] == "queued" and resumed["job_dir"] == str(local), resumed
        done = until(lambda m: m.get("job") == resumed["job"] and m["type"] in ("done", "error", "cancelled"))
        assert done["type"] == "done", done
        manifest = protocol.read_json_file(local / "manifest.json")
        assert len(list((local / "frames").glob("frame_*.png"))) == len(manifest["frames"]) > 0
        client.send("resume", job_dir=str(tmp_path), request_id="elsewhere")  # a folder no worker job mirrors
        assert until(lambda m: m.get("request_id") == "elsewhere" and m["type"] in ("queued", "error"))["code"] == "bad_input"
    finally:
        client.close()


@pytest.mark.parametrize("pattern", ["frame_%04d.png", "frame_####.png"])
def test_an_image_sequence_named_by_a_pattern_goes_to_a_transfer_mode_worker(studio, tmp_path, pattern):
    import cv2

    folder = tmp_path / "plate"
    folder.mkdir()
    capture = cv2.VideoCapture(DRIVING)
    for number in range(1, 10):
        ok, frame = capture.read()
        assert ok
        cv2.imwrite(str(folder / f"frame_{number:04d}.png"), cv2.resize(frame, (128, 64)))
    (folder / "notes.txt").write_text("not a frame: left behind")
    os.mkfifo(folder / "frame_0010.png")  # named like a frame, not a file: reading it would wait forever
    client = addon_client().WorkerClient.connect("127.0.0.1", studio.port, token=studio.tokens["bob"],
                                                 fingerprint=studio.fingerprint, timeout=120)
    seen: list[dict] = []
    try:
        client.submit(small_job(driving=str(folder / pattern), driving_fps=16.0), job_dir=tmp_path / "job",
                      request_id="seq")
        deadline = time.monotonic() + TIMEOUT
        while not any(m.get("type") in ("done", "error") for m in seen) and time.monotonic() < deadline:
            seen.extend(client.poll(0.5))
        queued = next(m for m in seen if m.get("request_id") == "seq" and m["type"] in ("queued", "error"))
        assert queued["type"] == "queued", queued
        assert next(m for m in seen if m.get("type") in ("done", "error"))["type"] == "done", seen[-3:]
        assert list((tmp_path / "job" / "frames").glob("frame_*.png"))
    finally:
        client.close()


def run_remote_job(studio, token: str, job: dict, job_dir: Path, **fields) -> list[dict]:
    """Submit `job` through the add-on's client in transfer mode; every message until the job ends."""
    client = addon_client().WorkerClient.connect("127.0.0.1", studio.port, token=token,
                                                 fingerprint=studio.fingerprint, timeout=120)
    seen: list[dict] = []
    try:
        client.send("submit", job=job, job_dir=str(job_dir), request_id="remote", **fields)
        deadline = time.monotonic() + TIMEOUT
        while time.monotonic() < deadline:
            seen.extend(client.poll(0.5))
            if any(m.get("type") in ("done", "error", "cancelled") and m.get("request_id") in ("remote", None)
                   and (m.get("job") or m["type"] == "error") for m in seen):
                return seen
        raise AssertionError(f"the job did not end: {seen[-3:]}")
    finally:
        client.close()


def test_a_lora_is_uploaded_to_a_transfer_mode_worker(studio, tmp_path):
    lora = tiny_lora_file(tmp_path)
    seen = run_remote_job(studio, studio.tokens["bob"], small_job(loras=[{"path": str(lora), "strength": 0.5}]),
                          tmp_path / "with_lora")
    ended = next(m for m in seen if m.get("type") in ("done", "error"))
    assert ended["type"] == "done", ended
    manifest = protocol.read_json_file(tmp_path / "with_lora" / "manifest.json")
    assert len(manifest["model"]["loras"]) == 1


def test_masks_and_matte_jobs_run_on_a_transfer_mode_worker(studio, tmp_path):
    for task in ("masks", "matte"):
        job = {"task": task, "source": DRIVING, "prompt": "person", "frame_end": 3}
        seen = run_remote_job(studio, studio.tokens["bob"], job, tmp_path / task, task=task)
        ended = next(m for m in seen if m.get("type") in ("done", "error"))
        assert ended["type"] == "done", ended
        assert (tmp_path / task / protocol.SEGMENT_RECORD).is_file()


def test_a_file_the_client_never_hashed_goes_unnamed_and_the_worker_names_it(studio, tmp_path):
    """The add-on sends a new file at once; the worker names the blob by the hash of what came, a second
    upload of the same file sends nothing, a changed file goes again, and another artist cannot see it."""
    # alice: carol's token is revoked by an earlier test of this module
    client = addon_client().WorkerClient.connect("127.0.0.1", studio.port, token=studio.tokens["alice"],
                                                 fingerprint=studio.fingerprint, timeout=120)
    try:
        transfers = client.transfers
        assert transfers.unnamed_uploads and transfers.binary
        plate = tmp_path / "plate.bin"
        data = bytes(range(256)) * (40 << 10) + b"tail"  # 10 MiB + 4 bytes: three chunks, an unaligned end
        plate.write_bytes(data)
        ref = transfers.upload_file(str(plate))
        sha = hashlib.sha256(data).hexdigest()
        assert ref == protocol.blob_ref(sha, "plate.bin")
        blob = studio.home / "jobs" / ".blobs" / sha
        assert blob.read_bytes() == data and json.loads(blob.with_suffix(".owners").read_text()) == ["alice"]
        sent = transfers.counters["up"]
        assert transfers.upload_file(str(plate)) == ref and transfers.counters["up"] == sent  # known: nothing sent
        with open(plate, "ab") as fh:
            fh.write(b"more")
        changed = transfers.upload_file(str(plate))
        assert changed == protocol.blob_ref(hashlib.sha256(data + b"more").hexdigest(), "plate.bin")
        assert transfers.counters["up"] == sent + len(data) + 4
        empty = tmp_path / "empty.txt"
        empty.write_bytes(b"")
        assert transfers.upload_file(str(empty)) == protocol.blob_ref(hashlib.sha256(b"").hexdigest(), "empty.txt")
        bob = Client(studio.port, studio.tokens["bob"])
        assert bob.request("blob_status", sha256=sha)["have"] == -1
        bob.close()
    finally:
        client.close()


def test_two_artists_uploading_at_once_each_get_their_own_bytes(studio, tmp_path):
    """Both uploads' chunks land in the worker's shared pool of reused buffers and pass through its one
    writer: each blob is the bytes its artist sent, named by their hash."""
    plates = {}
    for name in ("alice", "bob"):
        plates[name] = tmp_path / f"{name}_plate.bin"
        plates[name].write_bytes(os.urandom(5 * (4 << 20) + 321))  # five whole chunks and a tail each

    def upload(name):
        client = addon_client().WorkerClient.connect("127.0.0.1", studio.port, token=studio.tokens[name],
                                                     fingerprint=studio.fingerprint, timeout=120)
        try:
            return client.transfers.upload_file(str(plates[name]))
        finally:
            client.close()

    refs = dict(zip(plates, at_once(upload, list(plates))))
    for name, plate in plates.items():
        data = plate.read_bytes()
        sha = hashlib.sha256(data).hexdigest()
        assert refs[name] == protocol.blob_ref(sha, plate.name)
        assert (studio.home / "jobs" / ".blobs" / sha).read_bytes() == data


def test_an_unnamed_upload_cut_midway_goes_on_from_what_the_worker_holds(studio):
    """blob_status with the upload's id says how far it got; the rest completes it, and asking again after
    the end (a reply lost in a cut) names the blob instead of starting over."""
    alice = Client(studio.port, studio.tokens["alice"])
    data = b"x" * (5 << 20) + b"y" * 1000
    upload = "cut-midway-" + "0" * 16
    chunk = alice.capabilities["chunk_bytes"]
    first = alice.request("blob_put", data[:chunk], upload=upload, size=len(data), offset=0)
    assert first["have"] == chunk and first["complete"] is False and first["sha256"] == ""
    assert alice.request("blob_status", upload=upload)["have"] == chunk  # after a reconnect: from here
    wrong = alice.request("blob_put", data[:10], upload=upload, size=len(data), offset=0)
    assert wrong["type"] == "error" and f"send from {chunk}" in wrong["message"]
    last = alice.request("blob_put", data[chunk:], upload=upload, size=len(data), offset=chunk)
    sha = hashlib.sha256(data).hexdigest()
    assert last["complete"] is True and last["sha256"] == sha and last["have"] == len(data)
    again = alice.request("blob_status", upload=upload)
    assert again["complete"] is True and again["sha256"] == sha
    assert alice.request("blob_status", sha256=sha)["have"] == len(data)
    bad = alice.request("blob_status", upload="../../etc")
    assert bad["type"] == "error" and bad["code"] == "bad_request"
    alice.close()
