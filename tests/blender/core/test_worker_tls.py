"""The add-on's client against a real TLS worker on loopback: the pinned fingerprint decides.

The worker runs in the backend's own Python with `--tls` (as it does off loopback); the client
runs here, in the Blender test environment, with the standard library only.
"""

import os
import re
import subprocess
import threading

import pytest

import blender_testing
import process_guard
from scail2.core import worker_tls
from scail2.core.worker_client import CertificateError, UnknownCertificate, WorkerClient, WorkerClientError

REPO = blender_testing.REPO_ROOT
BACKEND_PYTHON = os.path.join(REPO, ".venvs", "backend", "bin", "python")

pytestmark = [pytest.mark.slow,  # a real TLS worker
              pytest.mark.skipif(not os.path.exists(BACKEND_PYTHON), reason="no backend environment")]


@pytest.fixture(scope="module")
def tls_worker(tmp_path_factory):
    home = tmp_path_factory.mktemp("tls")
    proc = process_guard.start(
        [BACKEND_PYTHON, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu", "--jobs-root",
         str(home / "jobs"), "--listen", "127.0.0.1:0", "--tls"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "XDG_CONFIG_HOME": str(home / "config")},
    )
    found = {}
    for raw in proc.stderr:
        line = raw.decode()
        if match := re.search(r"fingerprint: ([0-9A-F:]{95})", line):
            found["fingerprint"] = match.group(1)
        if match := re.search(r"give it to the add-on\): (\S+)", line):
            found["token"] = match.group(1)
        if match := re.search(r"listening on 127\.0\.0\.1:(\d+) with TLS", line):
            found["port"] = int(match.group(1))
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            break
    assert set(found) == {"fingerprint", "token", "port"}, found
    yield found
    process_guard.end(proc)


def test_fingerprints_are_read_in_any_spelling():
    digest = "ab" * 32
    assert worker_tls.normalize_fingerprint(digest) == ":".join(["AB"] * 32)
    assert worker_tls.normalize_fingerprint(" AB:" * 32) == ":".join(["AB"] * 32)
    assert worker_tls.normalize_fingerprint("AB:CD") == ""
    with pytest.raises(WorkerClientError, match="not a SHA-256 fingerprint"):
        WorkerClient.connect("127.0.0.1", 1, fingerprint="AB:CD")


def test_the_certificate_can_be_looked_at_before_any_token_is_sent(tls_worker):
    assert worker_tls.peek_fingerprint("127.0.0.1", tls_worker["port"], timeout=30) == tls_worker["fingerprint"]


def test_an_unpinned_certificate_is_shown_to_accept_once(tls_worker):
    with pytest.raises(UnknownCertificate) as caught:
        WorkerClient.connect("127.0.0.1", tls_worker["port"], token=tls_worker["token"], tls=True, timeout=60)
    assert caught.value.fingerprint == tls_worker["fingerprint"]
    assert tls_worker["fingerprint"] in str(caught.value) and "\n" not in str(caught.value)


def test_a_wrong_fingerprint_is_refused_in_one_line(tls_worker):
    wrong = ":".join(["00"] * 32)
    with pytest.raises(CertificateError) as caught:
        WorkerClient.connect("127.0.0.1", tls_worker["port"], token=tls_worker["token"], fingerprint=wrong, timeout=60)
    message = str(caught.value)
    assert message.startswith("refused:") and wrong in message and tls_worker["fingerprint"] in message
    assert "\n" not in message


def test_the_pinned_fingerprint_connects_in_transfer_mode(tls_worker):
    pinned = tls_worker["fingerprint"].replace(":", "").lower()  # pasted without colons
    client = WorkerClient.connect("127.0.0.1", tls_worker["port"], token=tls_worker["token"], fingerprint=pinned,
                                  timeout=60)
    try:
        assert client.uses_tls
        hello = next(m for m in client.poll(timeout=5) if m["type"] == "capabilities")
        assert hello["mode"] == "transfer" and hello["model"]["name"] == "tiny"
        client.send("ping")
        assert any(m.get("request") == "ping" for m in client.poll(timeout=10))
    finally:
        client.close()
