"""The add-on's worker client (plain Python, no Blender) against real workers in the backend environment.

The client runs here, in the Blender test environment; the worker runs in the backend's own
Python (`.venvs/backend/bin/python`), started exactly as the add-on starts it.
"""

import ast
import importlib
import os
import re
import signal
import socket
import struct
import subprocess
import sys
import textwrap
import threading
import time
import types
import zlib

import pytest

import blender_testing
import process_guard
from scail2 import protocol
from scail2.core import transfer, worker_client
from scail2.core.worker_client import WorkerClient, WorkerClientError

REPO = blender_testing.REPO_ROOT
BACKEND_PYTHON = os.path.join(REPO, ".venvs", "backend", "bin", "python")
FOOTAGE = os.path.dirname(blender_testing.FOOTAGE)
TIMEOUT = 180.0
TOKEN = "t0ken-t0ken-t0ken"  # the worker refuses tokens under 16 characters

_backend_here = pytest.mark.skipif(not os.path.exists(BACKEND_PYTHON), reason="no backend environment")


def needs_backend(test):
    """A test that runs a real worker: slow (left out of `make test-fast`), and only with the backend's environment."""
    return pytest.mark.slow(_backend_here(test))


posix_only = pytest.mark.skipif(os.name == "nt", reason="POSIX signals")


def small_spec(**changes):
    settings = dict(driving=os.path.join(FOOTAGE, "scail_001_driving.mp4"),
                    reference=os.path.join(FOOTAGE, "scail_001_ref.jpg"),
                    height=64, width=128, steps=2, seed=3, frame_end=5)
    settings.update(changes)
    return protocol.JobSpec(**settings)


def png_is_complete(path):
    """A whole PNG: signature, chunks with valid CRCs, IEND, and every scanline in the IDAT stream."""
    try:
        with open(path, "rb") as fh:
            data = fh.read()
    except OSError:
        return False
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    pos, idat, header, ended = 8, b"", None, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos:pos + 8])
        body, crc = data[pos + 8:pos + 8 + length], data[pos + 8 + length:pos + 12 + length]
        if len(body) != length or len(crc) != 4 or zlib.crc32(kind + body) != struct.unpack(">I", crc)[0]:
            return False
        if kind == b"IHDR":
            header = struct.unpack(">IIBB", body[:10])
        elif kind == b"IDAT":
            idat += body
        elif kind == b"IEND":
            ended = True
            break
        pos += 12 + length
    if not ended or header is None:
        return False
    width, height, depth, colour = header
    channels = {0: 1, 2: 3, 3: 1, 4: 2, 6: 4}[colour]
    try:
        return len(zlib.decompress(idat)) == height * (1 + (width * channels * depth + 7) // 8)
    except zlib.error:
        return False


class Mailbox:
    """Everything a client has delivered, polled the way Blender's timer polls it."""

    def __init__(self, client):
        self.client, self.seen = client, []

    def wait_for(self, predicate, timeout=TIMEOUT, since=0):
        """The first message from index ``since`` on that matches ``predicate``."""
        deadline = time.monotonic() + timeout
        checked = since
        while True:
            for message in self.seen[checked:]:
                checked += 1
                if predicate(message):
                    return message
            left = deadline - time.monotonic()
            assert left > 0, "timed out; last messages: {!r}; stderr: {!r}".format(
                self.seen[-5:], self.client.stderr_tail())
            self.seen.extend(self.client.poll(timeout=min(left, 0.2)))

    def finish(self, job_id):
        start = len(self.seen)
        self.wait_for(lambda m: m.get("job") == job_id and m["type"] in ("done", "cancelled", "error"))
        return [m for m in self.seen[start:] if m.get("job") == job_id]

    def frames(self, job_id):
        return [m["path"] for m in self.seen if m["type"] == "frame_ready" and m.get("job") == job_id]


@pytest.fixture(scope="module")
def local(tmp_path_factory):
    client = WorkerClient.start(BACKEND_PYTHON, ["--model", "tiny", "--jobs-root",
                                                 str(tmp_path_factory.mktemp("jobs"))])
    yield Mailbox(client)
    assert client.stop(timeout=30) == 0, client.stderr_tail()  # 0: it stopped when asked, not killed
    assert not client.is_alive


def fake_backend(folder, main_source):
    """An add-on folder whose ``backend`` package runs ``main_source`` as ``python -m backend``."""
    pkg = folder / "backend"
    pkg.mkdir()
    (pkg / "__init__.py").write_text("")
    (pkg / "__main__.py").write_text(textwrap.dedent(main_source))
    return str(folder)


def free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def serve_tcp(port, jobs_root, token):
    """A real worker listening on 127.0.0.1:port; returns the process once it listens."""
    proc = process_guard.start(
        [BACKEND_PYTHON, "-m", "backend", "serve", "--model", "tiny", "--jobs-root", str(jobs_root),
         "--listen", "127.0.0.1:{:d}".format(port), "--token", token],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    for raw in proc.stderr:
        if b"listening on" in raw:
            # Keep draining its log, or a full pipe would stall the worker.
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc
    raise AssertionError("the worker did not start listening (status {!r})".format(proc.wait()))


# -- the module itself ----------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["worker_client", "transports", "process_transport", "socket_transport"])
def test_client_uses_only_the_standard_library_and_protocol(name):
    path = os.path.join(REPO, "core", name + ".py")
    with open(path, encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    imported = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            imported.update(alias.name.split(".")[0] for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            imported.add(node.module.split(".")[0] if node.module and not node.level else "." + (node.module or ""))
    # the add-on's protocol (any of its modules), core/util.py, core/worker_tls.py, core/transfer.py and the
    # client's transports
    imported = {name for name in imported if name != ".protocol" and not name.startswith(".protocol.")}
    assert imported <= set(sys.stdlib_module_names) | {".", ".util", ".worker_tls", ".transfer", ".transports",
                                                       ".process_transport", ".socket_transport"}


def test_client_imports_as_part_of_the_add_on_package():
    # Inside Blender the add-on is a package: `from .. import protocol` must find the root's.
    package = types.ModuleType("scail2_pkg_test")
    package.__path__ = [REPO]  # the root __init__ (which imports bpy) is not executed
    sys.modules[package.__name__] = package
    try:
        module = importlib.import_module("scail2_pkg_test.core.worker_client")
        assert module.protocol.__name__ == "scail2_pkg_test.protocol"
        assert worker_client.protocol is protocol  # and as the tests import it
    finally:
        for name in [n for n in sys.modules if n.startswith("scail2_pkg_test")]:
            del sys.modules[name]


# -- a local worker -------------------------------------------------------------------------------


@needs_backend
def test_local_worker_runs_a_job_and_reports_every_frame(local, tmp_path):
    local.client.send("hello")
    caps = local.wait_for(lambda m: m["type"] == "capabilities")
    assert caps["protocol"] == protocol.PROTOCOL_VERSION and caps["model"]["noise_only"] is True
    assert local.client.is_alive and local.client.pid

    local.client.submit(small_spec(), job_dir=str(tmp_path / "job"))
    queued = local.wait_for(lambda m: m["type"] == "queued")
    assert queued["job_dir"] == os.path.realpath(tmp_path / "job")
    events = local.finish(queued["job"])
    assert events[-1]["type"] == "done", events[-1]
    frames = local.frames(queued["job"])
    assert len(frames) == 5 and all(png_is_complete(p) for p in frames)
    assert protocol.load_manifest(events[-1]["manifest"])["status"] == "done"


@needs_backend
def test_local_worker_cancel_after_the_first_step(local, tmp_path):
    # 130 output frames (the clip at 32 fps): two segments, so the cancel lands mid-job.
    local.client.submit(small_spec(frame_end=None, model_fps=32.0), job_dir=str(tmp_path / "job"))
    queued = local.wait_for(lambda m: m["type"] == "queued" and m["job_dir"] == os.path.realpath(tmp_path / "job"))
    local.wait_for(lambda m: m.get("job") == queued["job"] and m["type"] == "progress" and m["phase"] == "sample")
    local.client.cancel(queued["job"])
    events = local.finish(queued["job"])
    assert events[-1]["type"] == "cancelled", events[-1]
    assert all(png_is_complete(p) for p in local.frames(queued["job"]))
    # Still serving: the next job runs.
    local.client.submit(small_spec(prompt="next"), job_dir=str(tmp_path / "next"))
    queued = local.wait_for(lambda m: m["type"] == "queued" and m["job_dir"] == os.path.realpath(tmp_path / "next"))
    assert local.finish(queued["job"])[-1]["type"] == "done"


@needs_backend
def test_bad_input_comes_back_as_an_error_message(local, tmp_path):
    local.client.submit(small_spec(reference=str(tmp_path / "missing.png")))
    error = local.wait_for(lambda m: m["type"] == "error")
    assert error["code"] == "bad_input" and "reference image not found" in error["message"]


# -- misbehaving workers --------------------------------------------------------------------------


def test_malformed_worker_output_becomes_error_messages(tmp_path):
    addon = fake_backend(tmp_path, """
        import sys
        print("a stray print")
        print('{"v": 1, "type": "nonsense"}')
        print('{"v": 1, "type": "ok", "request": "hello"}', flush=True)
        print("Traceback ...\\nRuntimeError: the model exploded", file=sys.stderr, flush=True)
        sys.exit(3)
    """)
    client = WorkerClient.start(sys.executable, cwd=addon)
    box = Mailbox(client)
    exited = box.wait_for(lambda m: m.get("code") == "worker_exited", timeout=30)
    assert [m.get("code") for m in box.seen[:2]] == ["bad_output", "bad_output"]
    assert box.seen[2]["type"] == "ok"
    assert "exit status 3" in exited["message"] and "the model exploded" in exited["message"]
    assert all(m.get("local") for m in box.seen if m["type"] == "error")
    assert not client.is_alive
    with pytest.raises(WorkerClientError):
        client.submit(small_spec())
    assert client.stop(timeout=1) == 3


# A worker of the next protocol version: it greets, then answers every request and streams events.
NEXT_VERSION_WORKER = """
    import json, sys
    def say(kind, **fields):
        print(json.dumps({"v": 2, "type": kind, **fields}), flush=True)
    say("capabilities", protocol=2, backend="9.9", mode="paths", shiny_new_field=True)
    for line in sys.stdin:
        say("queued", job="j1", job_dir="/tmp/j1", position=0)
        for step in range(5):
            say("progress", job="j1", phase="sample", segment=1, segments=1, step=step, steps=5)
"""


def test_a_worker_of_another_protocol_version_is_one_clear_line(tmp_path):
    addon = fake_backend(tmp_path, NEXT_VERSION_WORKER)
    client = WorkerClient.start(sys.executable, cwd=addon)
    box = Mailbox(client)
    try:
        client.submit(small_spec())
        mismatch = box.wait_for(lambda m: m.get("type") == "error", timeout=30)
        deadline = time.monotonic() + 2.0  # whatever else the worker says in the meantime
        while time.monotonic() < deadline:
            box.seen.extend(client.poll(timeout=0.1))
    finally:
        client.stop(timeout=5)
    assert mismatch["code"] == "protocol_mismatch" and mismatch["local"] is True
    assert "protocol version 2" in mismatch["message"] and str(protocol.PROTOCOL_VERSION) in mismatch["message"]
    errors = [m for m in box.seen if m.get("type") == "error"]
    assert errors == [mismatch], errors  # said once: no "unexpected worker output" per line
    assert not [m for m in box.seen if m.get("type") != "error"]


def test_a_queue_on_a_worker_of_another_version_fails_its_job_with_that_line(tmp_path):
    from scail2.core import job as jobs
    from scail2.core import queue as job_queue

    addon = fake_backend(tmp_path, NEXT_VERSION_WORKER)
    queue = job_queue.JobQueue(jobs.LocalWorker(sys.executable, cwd=addon), str(tmp_path / "jobs"))
    job = queue.submit(small_spec())
    deadline = time.monotonic() + 30
    while job.active and time.monotonic() < deadline:
        queue.poll(timeout=0.1)
    queue.shutdown(timeout=5)
    assert job.status == "failed" and job.error.code == "protocol_mismatch", (job.status, job.error)
    assert "protocol version 2" in job.error.text() and "protocol version 2" in queue.notice


@posix_only
def test_stop_never_hangs_on_a_worker_that_ignores_everything(tmp_path):
    addon = fake_backend(tmp_path, """
        import signal, sys, time
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        print("ready", file=sys.stderr, flush=True)
        while True:
            time.sleep(1)
    """)
    client = WorkerClient.start(sys.executable, cwd=addon)
    deadline = time.monotonic() + 30
    while "ready" not in client.stderr_tail() and time.monotonic() < deadline:
        time.sleep(0.05)
    status = client.stop(timeout=1.0)
    assert status == -signal.SIGKILL and not client.is_alive  # killed after its second, not waited for


def test_a_missing_python_is_an_error_not_a_crash(tmp_path):
    with pytest.raises(WorkerClientError, match="cannot start the worker"):
        WorkerClient.start(str(tmp_path / "no-python"))


# -- a remote worker ------------------------------------------------------------------------------


@needs_backend
def test_remote_worker_with_token_and_reconnection(tmp_path):
    port = free_port()
    server = serve_tcp(port, tmp_path / "jobs", TOKEN)
    client = None
    try:
        with pytest.raises(WorkerClientError, match="refused the token"):
            WorkerClient.connect("127.0.0.1", port, token="wrong", timeout=30)
        client = WorkerClient.connect("127.0.0.1", port, token=TOKEN, timeout=30)
        box = Mailbox(client)
        assert box.wait_for(lambda m: m["type"] == "capabilities")["model"]["name"] == "tiny"
        client.submit(small_spec(), job_dir=str(tmp_path / "remote"))
        queued = box.wait_for(lambda m: m["type"] == "queued")
        assert box.finish(queued["job"])[-1]["type"] == "done"
        assert all(png_is_complete(p) for p in box.frames(queued["job"]))

        # The worker goes away and comes back on the same port: the client reconnects by itself.
        server.kill()
        server.wait(30)
        lost = box.wait_for(lambda m: m.get("code") == "connection_lost", timeout=30)
        assert lost["local"] and not client.is_alive
        with pytest.raises(WorkerClientError):
            client.cancel("anything")
        seen = len(box.seen)
        server = serve_tcp(port, tmp_path / "jobs", TOKEN)
        box.wait_for(lambda m: m["type"] == "capabilities", timeout=60, since=seen)
        assert client.is_alive
        client.send("list_jobs")
        assert box.wait_for(lambda m: m["type"] == "jobs")["jobs"] == []

        client.stop(timeout=30)
        assert server.wait(30) == 0
    finally:
        if client is not None:
            client.close()
        if server.poll() is None:
            server.kill()


@needs_backend
def test_a_refused_token_is_said_once_and_the_client_stops_trying_it(tmp_path):
    """The worker comes back with another token (a revoked one is refused the same way): the reconnecting
    client is refused once, says so with what to do, and tries no more (it used to reconnect every second
    until the worker shut this machine out for five minutes)."""
    port = free_port()
    server = serve_tcp(port, tmp_path / "jobs", TOKEN)
    client = WorkerClient.connect("127.0.0.1", port, token=TOKEN, timeout=30)
    box = Mailbox(client)
    try:
        box.wait_for(lambda m: m["type"] == "capabilities")
        server.kill()
        server.wait(30)
        box.wait_for(lambda m: m.get("code") == "connection_lost", timeout=30)
        seen = len(box.seen)
        server = process_guard.start(
            [BACKEND_PYTHON, "-m", "backend", "serve", "--model", "tiny", "--jobs-root", str(tmp_path / "jobs"),
             "--listen", "127.0.0.1:{:d}".format(port), "--token", "an-0ther-t0ken-now"],
            cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
        log = []
        threading.Thread(target=lambda: log.extend(server.stderr), daemon=True).start()
        refused = box.wait_for(lambda m: m.get("code") == "unauthorized", timeout=60, since=seen)
        assert "paste it as Token in the add-on's preferences" in refused["hint"]
        time.sleep(6)  # a reconnecting client would have come back three or more times by now
        box.seen.extend(client.poll())
        after = box.seen[box.seen.index(refused) + 1:]
        assert after == [] and not client.is_alive, after
        assert len([line for line in log if "connected" in line and "disconnected" not in line]) == 1, log
    finally:
        client.close()
        process_guard.end(server)


@needs_backend
def test_a_client_and_worker_that_disagree_on_tls_say_what_to_do(tmp_path):
    """A fingerprint left in the preferences for a worker without TLS (on this machine, or through an SSH
    tunnel), and no fingerprint for a worker with TLS: each is one line saying what to change (they were
    OpenSSL's "wrong version number" and "did not answer")."""
    port = free_port()
    plain = serve_tcp(port, tmp_path / "plain", TOKEN)
    try:
        with pytest.raises(WorkerClientError, match=r"answers without TLS: .* clear the Certificate in the prefer"):
            WorkerClient.connect("127.0.0.1", port, token=TOKEN, fingerprint="AB" * 32, timeout=30)
    finally:
        process_guard.end(plain)
    tls = process_guard.start(
        [BACKEND_PYTHON, "-m", "backend", "serve", "--model", "tiny", "--jobs-root", str(tmp_path / "tls"),
         "--listen", "127.0.0.1:0", "--tls", "--token", TOKEN], cwd=REPO, stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path)})
    try:
        port = next(int(m.group(1)) for line in tls.stderr if (m := re.search(r"127\.0\.0\.1:(\d+) with TLS", line)))
        with pytest.raises(WorkerClientError, match=r"takes TLS connections only: paste the certificate fingerprint"):
            WorkerClient.connect("127.0.0.1", port, token=TOKEN, timeout=30)
    finally:
        process_guard.end(tls)


@needs_backend
def test_a_token_revoked_under_a_transfer_fails_it_and_ends_the_connection_once(tmp_path):
    """In transfer mode the refusal can answer a transfer's own request: that transfer fails with it, and the
    queue is told the connection ended (without it, nothing reached the queue and the jobs it followed
    waited on)."""
    tokens_file = tmp_path / "tokens"
    added = subprocess.run([BACKEND_PYTHON, "-m", "backend", "tokens", "--file", str(tokens_file), "add", "alice"],
                           cwd=REPO, capture_output=True, text=True, timeout=120)
    token = added.stdout.strip()
    server = process_guard.start(
        [BACKEND_PYTHON, "-m", "backend", "serve", "--model", "tiny", "--jobs-root", str(tmp_path / "jobs"),
         "--listen", "127.0.0.1:0", "--tls", "--tokens", str(tokens_file)],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
        env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")})
    try:
        found = {}
        for line in server.stderr:
            for key, pattern in (("fingerprint", r"fingerprint: ([0-9A-F:]{95})"), ("port", r"127\.0\.0\.1:(\d+) with TLS")):
                if match := re.search(pattern, line):
                    found[key] = match.group(1)
            if "port" in found:
                threading.Thread(target=server.stderr.read, daemon=True).start()
                break
        client = WorkerClient.connect("127.0.0.1", int(found["port"]), token=token, fingerprint=found["fingerprint"],
                                      timeout=60)
        assert client.transfers is not None  # transfer mode: files go over the connection
        subprocess.run([BACKEND_PYTHON, "-m", "backend", "tokens", "--file", str(tokens_file), "revoke", "alice"],
                       cwd=REPO, capture_output=True, timeout=120, check=True)
        with pytest.raises(transfer.TransferError, match="revoked"):
            client.transfers.fetch_folder("a_job", str(tmp_path / "local"))
        box = Mailbox(client)
        refused = box.wait_for(lambda m: m.get("code") == "unauthorized", timeout=30)
        assert "request_id" not in refused and "paste it as Token" in refused["hint"]
        time.sleep(3)
        box.seen.extend(client.poll())
        assert box.seen[box.seen.index(refused) + 1:] == [] and not client.is_alive
        client.close()
    finally:
        process_guard.end(server)


def test_closing_the_client_ends_a_send_that_waits_for_a_worker_that_reads_nothing():
    """The socket does not block: a message larger than the socket's buffers waits in select for room,
    and closing the client (as Blender does on quitting) ends that wait at once with WorkerClientError."""
    listener = socket.create_server(("127.0.0.1", 0))
    stop = threading.Event()

    def worker_that_stops_reading():
        conn, _ = listener.accept()
        with conn:
            conn.recv(65536)  # the hello
            conn.sendall(protocol.encode_message("capabilities", protocol=protocol.PROTOCOL_VERSION).encode())
            stop.wait(30)

    server = threading.Thread(target=worker_that_stops_reading, daemon=True)
    server.start()
    client = WorkerClient.connect("127.0.0.1", listener.getsockname()[1], reconnect=False, timeout=10)
    outcome = []

    def send_a_large_chunk():
        started = time.monotonic()
        try:
            client.send("blob_put", upload="u" * 16, size=32 << 20, offset=0, payload=bytes(32 << 20))
        except Exception as exc:  # noqa: BLE001  (what it raises is what is checked)
            outcome.append((exc, time.monotonic() - started))

    sender = threading.Thread(target=send_a_large_chunk)
    sender.start()
    time.sleep(0.5)
    assert sender.is_alive()  # waiting for room: the worker takes nothing
    closed_at = time.monotonic()
    client.close()
    sender.join(5)
    stop.set()
    listener.close()
    assert not sender.is_alive()
    error, _ = outcome[0]
    assert isinstance(error, WorkerClientError), repr(error)
    assert time.monotonic() - closed_at < 2.0
