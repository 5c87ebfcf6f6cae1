"""A served worker's queue outlives a restart: two real TLS workers one after the other on one jobs root,
with named artists, the first stopped by SIGTERM (as systemd stops it) mid-job, and a third started on the
same jobs root by mistake refused; and the queue file's reading on its own (damaged files and entries)."""

from __future__ import annotations

import json
import signal
import time

import pytest
from test_shared_worker import Client
from test_worker import DRIVING, REFERENCE, WorkerProcess, small_job

from backend.service import kept_queue
from backend.service.identities import Entry, hash_token, write_entries
from backend.service.jobs import Job

TOKENS = {name: f"{name}-token-{'q' * 20}" for name in ("alice", "bob")}


def _worker(home):
    server = WorkerProcess("--model", "tiny", "--device", "cpu", "--jobs-root", str(home / "jobs"),
                           "--listen", "127.0.0.1:0", "--tls", "--tokens", str(home / "tokens"),
                           env={"XDG_CONFIG_HOME": str(home / "config")})
    server.port = int(server.wait_stderr(r"listening on 127\.0\.0\.1:(\d+) with TLS").group(1))
    return server


def _ended(client, job_id, timeout=240.0):
    return client.wait(lambda: client.ended(job_id), timeout=timeout)


@pytest.mark.slow
def test_a_restarted_worker_runs_the_queue_it_was_stopped_with_under_the_same_ids(tmp_path):
    write_entries(tmp_path / "tokens",
                  {name: Entry(name, "artist", hash_token(token)) for name, token in TOKENS.items()})
    first = _worker(tmp_path)
    alice, bob = Client(first.port, TOKENS["alice"]), Client(first.port, TOKENS["bob"])
    inputs = {"driving": alice.upload(DRIVING), "reference": alice.upload(REFERENCE)}
    assert bob.upload(DRIVING) == inputs["driving"] and bob.upload(REFERENCE) == inputs["reference"]
    running = alice.request("submit", job=small_job(**inputs, steps=120))["job"]
    alices = alice.request("submit", job=small_job(**inputs, seed=1))["job"]
    bobs = bob.request("submit", job=small_job(**inputs, seed=2))["job"]
    withdrawn = bob.request("submit", job=small_job(**inputs, seed=3))["job"]
    bob.send("cancel", job=withdrawn)  # withdrawn before the stop: it stays so
    assert _ended(bob, withdrawn)["type"] == "cancelled"
    alice.wait(lambda: any(e["type"] == "progress" and e["job"] == running and e.get("step") for e in alice.events))
    first.proc.send_signal(signal.SIGTERM)
    assert first.proc.wait(60) == 0, "".join(first.stderr)[-2000:]
    first.wait_stderr(rf"job {running} stops with the worker; it resumes at the next start")
    assert not [e for e in alice.events + bob.events if e["type"] == "cancelled" and e["job"] != withdrawn]
    kept = json.loads((tmp_path / "jobs" / kept_queue.QUEUE_FILE).read_text())
    kept_jobs = [(e["id"], e["owner"]) for e in kept["jobs"]]
    # The running one first; the other two in the turn order of the moment (it depends on when the first started)
    assert kept_jobs[0] == (running, "alice") and sorted(kept_jobs[1:]) == sorted([(alices, "alice"), (bobs, "bob")])
    assert all(e["blobs"] for e in kept["jobs"])  # their uploads are held again, not evicted meanwhile

    second = _worker(tmp_path)
    second.wait_stderr(r"3 jobs of before the restart queued again")
    kept_now = (tmp_path / "jobs" / kept_queue.QUEUE_FILE).read_bytes()
    third = WorkerProcess("--model", "tiny", "--device", "cpu", "--jobs-root", str(tmp_path / "jobs"), "--listen",
                          "127.0.0.1:0", "--tls", "--tokens", str(tmp_path / "tokens"),
                          env={"XDG_CONFIG_HOME": str(tmp_path / "config")})  # started twice by mistake
    assert third.proc.wait(120) == 2
    third.wait_stderr(rf"error: another worker \(PID {second.proc.pid}\) serves jobs from .*jobs: stop it, or give "
                      "this one a --jobs-root of its own")
    assert (tmp_path / "jobs" / kept_queue.QUEUE_FILE).read_bytes() == kept_now  # the first one's queue untouched
    alice, bob = Client(second.port, TOKENS["alice"]), Client(second.port, TOKENS["bob"])
    listed = alice.request("list_jobs")["jobs"]
    assert [e["job"] for e in listed if e["status"] in ("queued", "running")] == [running, alices]
    assert [e["job"] for e in bob.request("list_jobs")["jobs"] if e["status"] in ("queued", "running")] == [bobs]
    assert _ended(alice, running)["type"] == "done"  # run again under its id (from its last finished segment)
    assert _ended(bob, bobs)["type"] == "done" and _ended(alice, alices)["type"] == "done"
    # (a job's `started` may come before its artist has connected again: the log says what ran)
    for job_id, owner in ((running, "alice"), (alices, "alice"), (bobs, "bob")):
        second.wait_stderr(rf"job {job_id} \(generate\) for {owner} starts in ")
    assert not any(withdrawn in line for line in second.stderr)
    deadline = time.monotonic() + 60  # written once the job thread is through with the last job
    while json.loads((tmp_path / "jobs" / kept_queue.QUEUE_FILE).read_text())["jobs"]:
        assert time.monotonic() < deadline
        time.sleep(0.1)
    assert bob.request("shutdown")["type"] == "ok" and second.proc.wait(60) == 0


def test_a_damaged_queue_file_or_entry_is_left_out_in_one_line(tmp_path, capsys):
    path = tmp_path / kept_queue.QUEUE_FILE
    jobs = [Job("a1", {"seed": 1}, tmp_path / "a1", owner="alice", blobs=("ab" * 32,)),
            Job("b1", {"task": "masks"}, tmp_path / "b1", task="masks")]
    kept_queue.save_queue(path, jobs)
    loaded = kept_queue.load_queue(path)
    assert [(j.id, j.spec, j.job_dir, j.task, j.owner, j.blobs) for j in loaded] == \
        [(j.id, j.spec, j.job_dir, j.task, j.owner, j.blobs) for j in jobs]
    data = json.loads(path.read_text())
    data["jobs"].insert(1, {"id": "x", "spec": "not a dict"})
    path.write_text(json.dumps(data))
    assert [j.id for j in kept_queue.load_queue(path)] == ["a1", "b1"]
    path.write_text('{"format": 1, "jobs": [')  # cut short
    assert kept_queue.load_queue(path) == []
    assert kept_queue.load_queue(tmp_path / "none.json") == []
    logged = capsys.readouterr().err.splitlines()
    assert len(logged) == 2 and "damaged entry" in logged[0] and "no job of before the restart" in logged[1]
