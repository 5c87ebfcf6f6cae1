"""`python -m backend jobs`, run as a command against a real shared worker (TLS, named tokens) on 127.0.0.1:
its admin lists every artist's jobs and cancels them from a terminal, an artist sees and cancels only their
own, and every refusal is one line."""

from __future__ import annotations

import json
import os
import re
import shutil
import socket
import subprocess
import sys
import time

import pytest
from scail_fixtures import REPO
from test_shared_worker import Client
from test_worker import DRIVING, REFERENCE, WorkerProcess, small_job

from backend.service.identities import Entry, hash_token, write_entries

pytestmark = pytest.mark.slow
TOKENS = {"alice": "alice-token-" + "a" * 20, "bob": "bob-token-" + "b" * 20, "lead": "lead-token-" + "l" * 20}


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    home = tmp_path_factory.mktemp("jobs-command")
    write_entries(home / "tokens", {name: Entry(name, "admin" if name == "lead" else "artist", hash_token(token))
                                    for name, token in TOKENS.items()})
    server = WorkerProcess("--model", "tiny", "--device", "cpu", "--jobs-root", str(home / "jobs"),
                           "--listen", "127.0.0.1:0", "--tls", "--tokens", str(home / "tokens"),
                           env={"XDG_CONFIG_HOME": str(home / "config")})
    server.port = int(server.wait_stderr(r"listening on 127\.0\.0\.1:(\d+) with TLS").group(1))
    server.fingerprint = server.wait_stderr(r"fingerprint: ([0-9A-F:]{95})").group(1)
    server.home = home
    yield server
    if server.proc.poll() is None:
        assert Client(server.port, TOKENS["lead"]).request("shutdown")["type"] == "ok"
        assert server.proc.wait(60) == 0


def jobs_command(*args, token=None, config=None, env=()):
    """The command as a system administrator runs it; (exit status, stdout, stderr)."""
    environment = {key: value for key, value in os.environ.items() if key != "SCAIL2_TOKEN"}
    environment.update({"SCAIL2_TOKEN": token} if token else {})
    environment.update({"XDG_CONFIG_HOME": str(config)} if config else {})
    environment.update(env)
    done = subprocess.run([sys.executable, "-m", "backend", "jobs", *args], cwd=REPO, env=environment,
                          capture_output=True, text=True, timeout=300)
    return done.returncode, done.stdout, done.stderr


def submitted(client: Client, **changes) -> str:
    driving, reference = client.upload(DRIVING), client.upload(REFERENCE)
    answer = client.request("submit", job=small_job(driving=driving, reference=reference, **changes))
    assert answer["type"] == "queued", answer
    return answer["job"]


def row_of(output: str, job_id: str) -> list[str]:
    line = next(line for line in output.splitlines() if line.startswith(job_id))
    return re.split(r"\s{2,}", line)


def test_an_admin_lists_every_artists_jobs_and_cancels_them_from_a_terminal(worker):
    alice, bob = Client(worker.port, TOKENS["alice"]), Client(worker.port, TOKENS["bob"])
    long_job = submitted(alice, steps=2000)
    alice.wait(lambda: any(e.get("type") == "progress" and e.get("job") == long_job and e.get("step")
                           for e in alice.events))  # a denoising step taken: the list says which
    waiting, bobs = submitted(alice, seed=5), submitted(bob, seed=6)
    worker_address = f"127.0.0.1:{worker.port}"

    status, out, err = jobs_command("--worker", worker_address, "list", token=TOKENS["lead"],
                                    config=worker.home / "config")  # its own certificate, found on its own
    assert status == 0, err
    assert "signed in as lead (admin: every artist's jobs)" in out.splitlines()[0]
    assert "tiny" in out.splitlines()[0].lower()
    assert row_of(out, long_job)[1] == "alice"
    assert re.fullmatch(r"Generating: segment 1/1, step \d+/2000 \(running \d+ s\)", row_of(out, long_job)[2])
    assert [row_of(out, job)[1] for job in (waiting, bobs)] == ["alice", "bob"]
    places = {row_of(out, job)[2] for job in (waiting, bobs)}
    assert places == {"queued, 1 ahead", "queued, 2 ahead"}  # behind the running job, in the order they start

    status, out, err = jobs_command("--worker", worker_address, "list", "--json", token=TOKENS["lead"],
                                    config=worker.home / "config")  # for a pipeline's scripts and monitoring
    assert status == 0, err
    listing = json.loads(out)
    assert listing["worker"]["identity"] == "lead" and listing["worker"]["admin"] is True
    running, *queued = listing["jobs"]
    assert (running["job"], running["owner"], running["status"]) == (long_job, "alice", "running")
    assert sorted((e["job"], e["owner"], e["status"]) for e in queued) == sorted(
        [(waiting, "alice", "queued"), (bobs, "bob", "queued")])
    assert [e["state"] for e in queued] == ["queued, 1 ahead", "queued, 2 ahead"]
    assert running["progress"]["phase"] == "sample" and running["started_at"] <= time.time()
    assert running["state"].startswith("Generating: segment 1/1, step ")

    status, out, err = jobs_command("--worker", worker_address, "cancel", bobs, long_job, token=TOKENS["lead"],
                                    config=worker.home / "config")
    assert status == 0, (out, err)
    assert f"{bobs}: cancelled (it was queued)" in out.splitlines()
    assert f"{long_job}: cancelled (it was running)" in out.splitlines()
    bob.wait(lambda: bob.ended(bobs))  # the artist is told, as for a cancel from Blender
    assert bob.ended(bobs)["type"] == "cancelled"
    alice.wait(lambda: alice.ended(long_job))
    assert alice.ended(long_job)["type"] == "cancelled"

    status, out, _err = jobs_command("--worker", worker_address, "cancel", "0123456789ab", token=TOKENS["lead"],
                                     config=worker.home / "config")
    assert status == 1 and out.startswith("0123456789ab: no queued or running job")
    alice.wait(lambda: alice.ended(waiting))  # what was left ran on


def test_an_artist_lists_and_cancels_only_their_own(worker, tmp_path):
    alice, bob = Client(worker.port, TOKENS["alice"]), Client(worker.port, TOKENS["bob"])
    long_job = submitted(alice, steps=2000)
    bobs = submitted(bob, seed=7)
    token_file = tmp_path / "bob.token"
    token_file.write_text(TOKENS["bob"] + "\n")
    options = ("--worker", f"127.0.0.1:{worker.port}", "--fingerprint", worker.fingerprint.replace(":", "").lower(),
               "--token-file", str(token_file))

    status, out, err = jobs_command(*options, "list")
    assert status == 0, err
    assert "signed in as bob" in out and "admin" not in out
    assert bobs in out and long_job not in out
    status, out, _err = jobs_command(*options, "cancel", long_job)  # alice's: as a job that does not exist
    assert status == 1 and out.startswith(f"{long_job}: no queued or running job")
    status, out, _err = jobs_command(*options, "cancel", bobs)
    assert status == 0 and out.splitlines() == [f"{bobs}: cancelled (it was queued)"]
    assert alice.ended(long_job) is None
    status, out, _err = jobs_command("--worker", f"127.0.0.1:{worker.port}", "cancel", long_job, token=TOKENS["lead"],
                                     config=worker.home / "config")
    assert status == 0 and out.splitlines() == [f"{long_job}: cancelled (it was running)"]


def test_every_refusal_is_one_line_before_anything_is_asked(worker, tmp_path):
    address = f"127.0.0.1:{worker.port}"
    config = worker.home / "config"
    cases = [
        (jobs_command("--worker", address, "list", config=config), "no token: set SCAIL2_TOKEN"),
        (jobs_command("--worker", address, "list", token="not-anyones-token-at-all", config=config), "unauthorized"),
        (jobs_command("--worker", address, "--fingerprint", "AB" * 32, "list", token=TOKENS["lead"]),
         f"refused: the worker at {address} shows certificate {worker.fingerprint}"),
        (jobs_command("--worker", "192.0.2.1:7860", "list", token=TOKENS["lead"], config=tmp_path),
         "the worker at 192.0.2.1:7860 is reached with TLS only: give --fingerprint"),
        (jobs_command("--worker", f"127.0.0.1:{_closed_port()}", "list", token=TOKENS["lead"], config=config),
         "cannot reach the worker"),
        (jobs_command("--worker", address, "--fingerprint", "12:34", "list", token=TOKENS["lead"]),
         "--fingerprint takes the 64 hexadecimal digits"),
        (jobs_command("--worker", address, "list", token=TOKENS["lead"], config=tmp_path),  # no certificate here
         "this worker takes TLS connections only"),
    ]
    for (status, out, err), said in cases:
        assert status == 2 and out == "" and len(err.strip().splitlines()) == 1, (said, out, err)
        assert err.startswith("error: ") and said in err, (said, err)


def test_a_worker_without_tls_is_listed_on_loopback_even_where_an_old_certificate_lies(worker, tmp_path):
    """A worker started once with --tls and now without (an SSH tunnel set-up): its old certificate is still in
    the configuration folder; the command finds the worker answers without TLS and asks again in plain."""
    plain = WorkerProcess("--model", "tiny", "--device", "cpu", "--jobs-root", str(tmp_path / "jobs"),
                          "--listen", "127.0.0.1:0", "--token", "plain-token-" + "p" * 20)
    try:
        port = int(plain.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        config = tmp_path / "config"
        shutil.copytree(worker.home / "config", config)
        status, out, err = jobs_command("--worker", f"127.0.0.1:{port}", "list", token="plain-token-" + "p" * 20,
                                        config=config)
        assert status == 0, err
        assert out.splitlines()[1:] == ["no job queued or running"]
        status, _out, err = jobs_command("--worker", f"127.0.0.1:{port}", "--fingerprint", worker.fingerprint,
                                         "list", token="plain-token-" + "p" * 20)
        assert status == 2 and "answers without TLS" in err
    finally:
        plain.stop()


def _ipv6_loopback() -> bool:
    try:
        socket.create_server(("::1", 0), family=socket.AF_INET6).close()
    except OSError:
        return False
    return True


@pytest.mark.skipif(not _ipv6_loopback(), reason="this machine has no IPv6 loopback (::1)")
def test_an_ipv6_worker_is_named_as_it_is_typed(tmp_path):
    """An address with an IPv6 host is written back with brackets, as it is typed (``[::1]:7860``): in the
    worker's own log and in the command's lines, never the ambiguous ``::1:7860``."""
    token = "ipv6-token-" + "q" * 20
    plain = WorkerProcess("--model", "tiny", "--device", "cpu", "--jobs-root", str(tmp_path / "jobs"),
                          "--listen", "[::1]:0", "--token", token)
    try:
        port = int(plain.wait_stderr(r"listening on \[::1\]:(\d+)").group(1))
        status, out, err = jobs_command("--worker", f"[::1]:{port}", "list", token=token, config=tmp_path / "config")
        assert status == 0, err
        assert out.splitlines()[1:] == ["no job queued or running"]
        plain.wait_stderr(r"client \[::1\]:\d+ disconnected")
    finally:
        plain.stop()
    status, out, err = jobs_command("--worker", f"[::1]:{port}", "list", token=token, config=tmp_path / "config")
    assert status == 2 and f"cannot reach the worker at [::1]:{port}:" in err, err


def _closed_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def test_a_worker_that_never_answers_is_one_line_not_a_wait_for_good(monkeypatch, capsys, tmp_path):
    """Something listens at the address but says nothing (a hung worker, another program): one line."""
    import argparse
    import threading

    from backend.service import job_commands

    listener = socket.create_server(("127.0.0.1", 0))
    accepted = []
    threading.Thread(target=lambda: accepted.append(listener.accept()), daemon=True).start()
    monkeypatch.setattr(job_commands, "ANSWER_TIMEOUT_S", 1.0)
    monkeypatch.setenv("SCAIL2_TOKEN", TOKENS["lead"])
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path))  # no certificate: plain, on loopback
    args = argparse.Namespace(worker=f"127.0.0.1:{listener.getsockname()[1]}", token_file=None, fingerprint="",
                              certificate=None, action="list")
    assert job_commands.run_jobs(args) == job_commands.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip().splitlines()
    assert err == [f"error: the worker at 127.0.0.1:{listener.getsockname()[1]} did not answer hello within 1 s"]
    listener.close()
