"""The add-on's job queue (core/job.py, core/queue.py: plain Python, no Blender) pumped against real workers.

The queue runs here, in the Blender test environment but without importing bpy;
the worker runs in the backend's own Python (`.venvs/backend/bin/python`) with the
tiny model on the CPU, started exactly as the add-on starts it. One worker serves
the whole module; the tests that need a worker of their own (killed, refusing to
start, remote) start small ones.
"""

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time

import pytest

import blender_testing
import process_guard
from scail2 import protocol
from scail2.core import job as jobs
from scail2.core import queue as job_queue
from scail2.protocol.progress_text import progress_fields_text

REPO = blender_testing.REPO_ROOT
BACKEND_PYTHON = os.path.join(REPO, ".venvs", "backend", "bin", "python")
FOOTAGE = os.path.dirname(blender_testing.FOOTAGE)
OOM_PROMPT = "simulate running out of memory"
TIMEOUT = 120.0

_backend_here = pytest.mark.skipif(not os.path.exists(BACKEND_PYTHON), reason="no backend environment")


def needs_backend(test):
    """A test that runs a real worker: slow (left out of `make test-fast`), and only with the backend's environment."""
    return pytest.mark.slow(_backend_here(test))


def small_spec(**changes):
    settings = dict(driving=os.path.join(FOOTAGE, "scail_001_driving.mp4"),
                    reference=os.path.join(FOOTAGE, "scail_001_ref.jpg"),
                    height=64, width=128, steps=4, seed=3, frame_end=5)
    settings.update(changes)
    return protocol.JobSpec(**settings)


def tiny_worker(*extra, env=()):
    return jobs.LocalWorker(BACKEND_PYTHON, ("--model", "tiny", "--device", "cpu", *extra), cwd=REPO, env=env)


class Pump:
    """Polls a queue the way Blender's timer does, keeping every change."""

    def __init__(self, queue):
        self.queue, self.changes = queue, []

    def until(self, predicate, timeout=TIMEOUT):
        deadline = time.monotonic() + timeout
        while not predicate():
            assert time.monotonic() < deadline, "timed out; notice {!r}; jobs {!r}".format(
                self.queue.notice, [(j.key, j.status, j.error) for j in self.queue.jobs.values()])
            self.changes.extend(self.queue.poll(timeout=0.05))
        self.changes.extend(self.queue.poll())

    def kinds(self, job):
        return [change.kind for change in self.changes if change.job is job]


@pytest.fixture(scope="module")
def queue(tmp_path_factory):
    if not os.path.exists(BACKEND_PYTHON):
        pytest.skip("no backend environment")
    root = tmp_path_factory.mktemp("jobs")
    # tests/fault_hooks' sitecustomize makes a job with OOM_PROMPT fail like a full GPU.
    faults = (("SCAIL2_TEST_FAIL_OOM", OOM_PROMPT), ("PYTHONPATH", os.path.join(REPO, "tests", "fault_hooks")))
    queue = job_queue.JobQueue(tiny_worker(env=faults), str(root))
    yield queue
    client = queue.client
    queue.shutdown(timeout=30)
    if client is not None:
        assert client.returncode == 0, client.stderr_tail()
        assert not client.is_alive


@pytest.fixture
def pump(queue):
    return Pump(queue)


# -- plain logic ----------------------------------------------------------------------------------

def test_module_has_no_blender_imports():
    for name in ("job.py", "queue.py"):
        with open(os.path.join(REPO, "core", name), encoding="utf-8") as fh:
            source = fh.read()
        assert "import bpy" not in source and "mathutils" not in source


@pytest.mark.parametrize("seconds, text", [(None, ""), (0.4, "0 s"), (59, "59 s"), (75, "1 min 15 s"),
                                           (3 * 3600 + 120, "3 h 2 min")])
def test_format_duration(seconds, text):
    assert jobs.format_duration(seconds) == text


@pytest.mark.parametrize("text, expected", [("127.0.0.1:7860", ("127.0.0.1", 7860)),
                                            ("gpu-box:9000", ("gpu-box", 9000)), ("[::1]:80", ("::1", 80))])
def test_parse_address(text, expected):
    assert jobs.parse_address(text) == expected


@pytest.mark.parametrize("text", ["127.0.0.1:7860", "gpu-box:9000", "[::1]:80", "[fd00::20]:7860"])
def test_an_address_is_named_back_as_it_was_typed(text):
    """The worker's name in the panel and in its messages reads back as typed: an IPv6 host in brackets."""
    assert jobs.RemoteWorker(*jobs.parse_address(text)).describe() == "worker at " + text


@pytest.mark.parametrize("text", ["", "7860", "host:", "host:port", "host:70000"])
def test_parse_address_refuses(text):
    with pytest.raises(ValueError):
        jobs.parse_address(text)


class FakeClock:
    def __init__(self):
        self.now = 100.0

    def __call__(self):
        return self.now


def test_eta_from_step_timing():
    """2 s per step, 3 segments of 10 steps: the ETA counts the steps and segment decodes left."""
    clock = FakeClock()
    queue = job_queue.JobQueue(jobs.LocalWorker("/nowhere/python"), "/tmp/jobs", clock=clock)
    job = jobs.Job(key="k", spec={}, id="w1", status="queued", sent=True)
    queue.jobs[job.key] = job

    def event(kind, **fields):
        queue._handle(dict(v=1, type=kind, job="w1", **fields))

    event("started", frames=200, segments=3)
    event("progress", phase="sample", segment=1, segments=3, step=1, steps=10)
    assert job.eta_s is None  # one step: no timing yet
    for step in range(2, 11):
        clock.now += 2.0
        event("progress", phase="sample", segment=1, segments=3, step=step, steps=10)
    # 2 segments x 10 steps x 2 s, and 3 decodes (this segment's too), each a step's time until one is seen.
    assert job.eta_s == pytest.approx(20 * 2.0 + 3 * 2.0)
    event("progress", phase="decode", segment=1, segments=3)
    clock.now += 6.0
    event("frame_ready", index=0, path="/f/frame_000000.png", source_time=0.0)
    assert job._segment_tail == [6.0]
    assert job.eta_s == pytest.approx(20 * 2.0 + 2 * 6.0)
    assert job.phase_text() == "Decoding frames: segment 1/3"
    assert job.progress() == pytest.approx(0.3)
    event("frame_ready", index=1, path="/f/frame_000001.png", source_time=0.0625)
    assert job._segment_tail == [6.0] and job.preview == "/f/frame_000001.png"
    assert job.first_frame == "/f/frame_000000.png"
    event("progress", phase="sample", segment=2, segments=3, step=1, steps=10)
    assert job.phase_text() == "Generating: segment 2/3, step 1/10"
    assert job.eta_s == pytest.approx(19 * 2.0 + 2 * 6.0)


def test_invalid_spec_fails_without_a_worker(tmp_path):
    queue = job_queue.JobQueue(jobs.LocalWorker("/nowhere/python"), str(tmp_path))
    job = queue.submit(dict(small_spec().to_dict(), mode="dance"))
    assert job.status == "failed" and job.error.code == "bad_input"
    assert "mode must be one of" in job.error.message
    assert queue.client is None
    assert [c.kind for c in queue.poll()] == ["failed"]


def test_after_a_reconnection_a_job_the_worker_queued_again_is_shown_queued(tmp_path):
    """A restarted worker that keeps its queue lists the job that was running as queued: the panel says so,
    with its place, instead of its last step; a job it no longer lists ends by what its folder says."""
    queue = job_queue.JobQueue(jobs.LocalWorker("/nowhere/python"), str(tmp_path))
    running = jobs.Job(key="k1", spec=small_spec().to_dict(), job_dir=str(tmp_path / "one"), status="running", id="w1")
    gone = jobs.Job(key="k2", spec=small_spec().to_dict(), job_dir=str(tmp_path / "two"), status="queued", id="w2")
    queue.jobs.update({"k1": running, "k2": gone})
    queue._reconcile([{"job": "w1", "status": "queued", "position": 2, "others_ahead": 1}])
    assert (running.status, running.position, running.others_ahead) == ("queued", 2, 1)
    assert gone.status == "failed" and gone.error.code == "connection_lost"
    assert [(c.job.key, c.kind) for c in queue._changes] == [("k1", "queued"), ("k2", "failed")]


def test_missing_python_fails_at_once_with_a_hint(tmp_path):
    queue = job_queue.JobQueue(jobs.LocalWorker(str(tmp_path / "no-python")), str(tmp_path))
    job = queue.submit(small_spec())
    assert job.status == "failed"
    assert job.error.code == "worker_not_started"
    assert "no-python" in job.error.message and "\n" not in job.error.message
    assert "preferences" in job.error.hint
    assert not queue.busy


# -- against the module's worker ------------------------------------------------------------------

@needs_backend
def test_whole_job_pumped_without_blender(queue, pump):
    job = queue.submit(small_spec(), meta={"scene": "Shot"})
    assert job.status == "submitting" and job.job_dir.startswith(queue.jobs_root)
    seen = []

    def record():
        if job.status == "running" and job.phase:
            seen.append((job.phase, job.segment, job.segments, job.step, job.steps, job.eta_s))
        return job.finished

    pump.until(record)
    assert job.status == "done", job.error
    kinds = pump.kinds(job)
    assert kinds[0] == "queued" and kinds[-1] == "done"
    assert "started" in kinds and "progress" in kinds and kinds.count("frame") == 5
    assert job.id and len(job.id) == 12
    assert (job.segments, job.steps, job.step) == (1, 4, 4)
    assert job.frames == job.frames_ready == 5
    assert job.first_frame.endswith("frame_000000.png") and job.preview.endswith("frame_000004.png")
    assert os.path.isfile(job.preview)
    assert job.manifest == os.path.join(job.job_dir, "manifest.json")
    data = protocol.load_manifest(job.manifest)
    assert data["status"] == "done" and data["seed"] == 3 and len(data["frames"]) == 5
    assert job.noise_only and any("identity 1" in warning for warning in job.warnings)
    assert job.meta == {"scene": "Shot"}
    assert job.progress() == 1.0 and job.eta_s is None
    assert job.phase_text() == "Done: 5 frames"
    assert not queue.busy


@needs_backend
def test_several_jobs_wait_their_turn(queue, pump):
    first = queue.submit(small_spec(seed=1))
    second = queue.submit(small_spec(seed=2))
    pump.until(lambda: second.status != "submitting")
    assert second.position == 1 + first.position or first.status != "queued"
    pump.until(lambda: first.finished and second.finished)
    assert first.status == second.status == "done"
    assert first.finished_at <= second.finished_at
    assert first.job_dir != second.job_dir
    ends = [c.job for c in pump.changes if c.kind == "done"]
    assert ends == [first, second]


@needs_backend
def test_cancel_running_and_queued_jobs(queue, pump):
    running = queue.submit(small_spec(steps=2000))
    waiting = queue.submit(small_spec())
    pump.until(lambda: running.status == "running" and running.phase == "sample" and running.step >= 2)
    assert running.eta_s is not None
    assert queue.cancel(waiting.key)
    pump.until(lambda: waiting.finished, timeout=10)
    assert waiting.status == "cancelled"
    assert queue.cancel(running.key)
    pump.until(lambda: running.finished, timeout=30)
    assert running.status == "cancelled"
    assert running.error is None
    assert not queue.cancel(running.key)  # it has ended
    state = protocol.load_manifest(os.path.join(running.job_dir, "state.json"))
    assert state["status"] == "cancelled"


@needs_backend
def test_cancel_before_the_worker_has_it(queue, pump):
    job = queue.submit(small_spec(seed=9))
    assert job.status == "submitting"
    queue.cancel(job.key)
    pump.until(lambda: job.finished, timeout=30)
    assert job.status == "cancelled"


@needs_backend
def test_missing_input_is_one_line(queue, pump, tmp_path):
    job = queue.submit(small_spec(reference=str(tmp_path / "nobody.png")))
    pump.until(lambda: job.finished, timeout=30)
    assert job.status == "failed" and job.error.code == "bad_input"
    assert job.error.message == "reference image not found: " + str(tmp_path / "nobody.png")
    assert job.error.text() == job.error.message
    assert job.phase_text().startswith("Failed: reference image not found")


@needs_backend
def test_worker_error_with_hint(queue, pump):
    job = queue.submit(small_spec(prompt=OOM_PROMPT))
    pump.until(lambda: job.finished)
    assert job.status == "failed" and job.error.code == "out_of_memory"
    assert "out of memory" in job.error.message.lower() and "\n" not in job.error.message
    assert job.error.hint == "lower the resolution, use fp8 storage or group offload"
    assert job.error.text().endswith("(lower the resolution, use fp8 storage or group offload)")
    # The worker carries on.
    after = queue.submit(small_spec())
    pump.until(lambda: after.finished)
    assert after.status == "done"


# -- workers of their own -------------------------------------------------------------------------

@needs_backend
def test_worker_that_dies_fails_its_jobs_and_is_replaced(tmp_path):
    queue = job_queue.JobQueue(tiny_worker(), str(tmp_path))
    pump = Pump(queue)
    try:
        job = queue.submit(small_spec(steps=2000))
        pump.until(lambda: job.status == "running" and job.step >= 1)
        first_pid = queue.client.pid
        queue.client.kill()
        pump.until(lambda: job.finished, timeout=30)
        assert job.status == "failed" and job.error.code == "worker_exited"
        assert "the worker stopped" in job.error.message
        assert queue.notice
        again = queue.submit(small_spec())
        pump.until(lambda: again.finished)
        assert again.status == "done"
        assert queue.client.pid != first_pid
    finally:
        queue.shutdown()


@needs_backend
def test_worker_that_cannot_start_is_not_restarted_in_a_loop(tmp_path):
    queue = job_queue.JobQueue(tiny_worker("--no-such-option"), str(tmp_path))
    pump = Pump(queue)
    try:
        job = queue.submit(small_spec())
        pump.until(lambda: job.finished, timeout=60)
        assert job.status == "failed" and job.error.code == "worker_exited"
        assert "no-such-option" in job.error.text()
        time.sleep(0.3)
        assert queue.poll() == [] and queue.client is None  # nothing waits: no new worker
    finally:
        queue.shutdown()


def _free_port():
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _serve_remote(tmp_path, port, *auth):
    """A tiny worker serving TCP on 127.0.0.1:port with ``auth`` (``--token T`` or ``--tokens FILE``), listening."""
    proc = process_guard.start(
        [BACKEND_PYTHON, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu",
         "--jobs-root", str(tmp_path / "remote"), "--listen", "127.0.0.1:{:d}".format(port), *auth],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
    )
    proc.log = []  # its stderr, for a failure's message
    for raw in proc.stderr:
        proc.log.append(raw.decode("utf-8", "replace"))
        if b"listening on" in raw:
            threading.Thread(target=lambda: proc.log.extend(line.decode("utf-8", "replace") for line in proc.stderr),
                             daemon=True).start()
            return proc
    process_guard.end(proc)
    pytest.fail("the worker did not listen (status {!r})".format(proc.wait()))


@needs_backend
def test_remote_worker(tmp_path):
    port, token = _free_port(), "s3cret-s3cret-s3cret"
    proc = _serve_remote(tmp_path, port, "--token", token)
    try:
        refused = job_queue.JobQueue(jobs.RemoteWorker("127.0.0.1", port, "wrong"), str(tmp_path))
        job = refused.submit(small_spec())
        Pump(refused).until(lambda: job.finished, timeout=30)
        assert job.status == "failed" and job.error.code == "connection_failed"
        assert "refused the token" in job.error.message

        queue = job_queue.JobQueue(jobs.RemoteWorker("127.0.0.1", port, token), str(tmp_path / "jobs"))
        pump = Pump(queue)
        job = queue.submit(small_spec())
        assert job.status == "submitting"  # connecting runs in a thread
        pump.until(lambda: job.finished)
        assert job.status == "done", job.error
        assert job.job_dir.startswith(str(tmp_path / "jobs"))  # the folder Blender chose
        assert os.path.isfile(job.manifest)
        assert queue.capabilities is not None
        assert queue.signed_in_as() == ""  # one token, one user: nobody to tell apart
        queue.shutdown()
        assert proc.poll() is None  # a remote worker keeps running
    finally:
        process_guard.end(proc)


@needs_backend
def test_jobs_go_on_after_the_remote_worker_is_restarted(tmp_path):
    """The worker's machine is restarted (SIGTERM, as systemd stops it) while one job runs and one waits:
    the add-on reconnects to the new worker, finds both queued again and follows them to their end."""
    port, token = _free_port(), "s3cret-s3cret-s3cret"
    proc = _serve_remote(tmp_path, port, "--token", token)
    try:
        queue = job_queue.JobQueue(jobs.RemoteWorker("127.0.0.1", port, token), str(tmp_path / "jobs"))
        pump = Pump(queue)
        first, second = queue.submit(small_spec(steps=200)), queue.submit(small_spec(seed=4))
        pump.until(lambda: first.status == "running" and first.step >= 1 and second.status == "queued")
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(60) == 0
        time.sleep(0.5)  # its last log lines read
        assert any("stops with the worker; it resumes at the next start" in line for line in proc.log), proc.log
        pump.until(lambda: "lost the connection" in queue.notice, timeout=60)
        assert first.status == "running" and second.status == "queued"  # not failed, not cancelled
        proc = _serve_remote(tmp_path, port, "--token", token)
        pump.until(lambda: not queue.notice, timeout=60)  # connected again: the panel no longer says it is lost
        pump.until(lambda: first.finished and second.finished, timeout=600)
        assert (first.status, second.status) == ("done", "done"), (first.error, second.error, "".join(proc.log))
        assert any("2 jobs of before the restart queued again" in line for line in proc.log), proc.log
        assert os.path.isfile(first.manifest) and os.path.isfile(second.manifest)
        queue.shutdown()
    finally:
        process_guard.end(proc)


@needs_backend
def test_an_admin_lists_every_artists_jobs_on_the_worker_and_cancels_one(tmp_path):
    """The Queue panel's list of the worker's jobs: an admin's shows every artist's with their owner, and
    cancelling one there stops it for its artist; an artist's shows only their own (other sessions' too)."""
    port, tokens_file = _free_port(), tmp_path / "tokens"
    alice_token, lead_token = _tokens(tokens_file, "add", "alice"), _tokens(tokens_file, "add", "lead", "--admin")
    proc = _serve_remote(tmp_path, port, "--tokens", str(tokens_file))
    try:
        alice = job_queue.JobQueue(jobs.RemoteWorker("127.0.0.1", port, alice_token), str(tmp_path / "alice"))
        lead = job_queue.JobQueue(jobs.RemoteWorker("127.0.0.1", port, lead_token), str(tmp_path / "lead"))
        alice_pump, lead_pump = Pump(alice), Pump(lead)
        vanishing = tmp_path / "ref_copy.jpg"
        shutil.copyfile(os.path.join(FOOTAGE, "scail_001_ref.jpg"), vanishing)
        long_job, waiting = alice.submit(small_spec(steps=2000)), alice.submit(small_spec(seed=9))
        failing = alice.submit(small_spec(reference=str(vanishing)))  # its reference is gone when it starts
        alice_pump.until(lambda: long_job.status == "running" and waiting.status == failing.status == "queued")
        vanishing.unlink()
        lead.list_worker_jobs()
        assert lead.busy  # the timer follows until the list is in
        lead_pump.until(lambda: not lead.listing_worker_jobs)
        assert [(e["job"], e["owner"], e["status"]) for e in lead.worker_jobs] == [
            (long_job.id, "alice", "running"), (waiting.id, "alice", "queued"), (failing.id, "alice", "queued")]
        assert "worker_jobs" in [change.kind for change in lead_pump.changes]
        lead_pump.until(lambda: (lead.worker_jobs[0].get("progress") or {}).get("step"))  # followed step by step
        assert progress_fields_text(lead.worker_jobs[0]["progress"]).startswith("Generating: segment 1/1, step ")
        later = alice.submit(small_spec(seed=11))  # queued once the list is shown: the list follows by itself
        alice_pump.until(lambda: later.status == "queued")
        lead_pump.until(lambda: any(e["job"] == later.id for e in lead.worker_jobs))
        assert [(e["job"], e.get("position")) for e in lead.worker_jobs][-1] == (later.id, 3)
        assert lead.cancel_worker_job(waiting.id) and not lead.cancel_worker_job("0123456789ab")
        alice_pump.until(lambda: waiting.finished)
        assert waiting.status == "cancelled"
        lead_pump.until(lambda: not lead.listing_worker_jobs)
        assert [(e["job"], e.get("position")) for e in lead.worker_jobs] == [
            (long_job.id, None), (failing.id, 1), (later.id, 2)]  # the places of those behind it, moved up
        other_session = job_queue.JobQueue(jobs.RemoteWorker("127.0.0.1", port, alice_token), str(tmp_path / "a2"))
        other_pump = Pump(other_session)
        other_session.list_worker_jobs()
        other_pump.until(lambda: not other_session.listing_worker_jobs)
        assert [e["job"] for e in other_session.worker_jobs] == [long_job.id, failing.id, later.id]  # from elsewhere
        assert other_session.cancel_worker_job(long_job.id)
        alice_pump.until(lambda: long_job.finished)
        assert long_job.status == "cancelled"
        alice_pump.until(lambda: failing.finished)
        assert failing.status == "failed" and "reference" in failing.error.message
        alice_pump.until(lambda: later.finished)
        other_pump.until(lambda: not other_session.worker_jobs)  # the end events took them off the list
        lead_pump.until(lambda: not lead.worker_jobs and not lead.listing_worker_jobs)  # the admin's list too
        assert lead.notice == ""  # alice's job's error is hers: not the admin's panel's line
        for queue in (alice, lead, other_session):
            queue.shutdown()
    finally:
        process_guard.end(proc)


def test_a_list_of_the_workers_jobs_asked_of_a_worker_not_there_ends_with_one_line(tmp_path):
    """Nothing listens at the address: the list asked for ends (the panel stops saying it is asking, the timer
    stops), with the connection's line."""
    queue = job_queue.JobQueue(jobs.RemoteWorker("127.0.0.1", _free_port(), "s3cret-s3cret-s3cret"), str(tmp_path))
    queue.list_worker_jobs()
    Pump(queue).until(lambda: not queue.busy, timeout=60)
    assert not queue.listing_worker_jobs and queue.worker_jobs == [] and "connect" in queue.notice
    queue.shutdown()


def _tokens(path, *args):
    result = subprocess.run([BACKEND_PYTHON, "-m", "backend", "tokens", "--file", str(path), *args], cwd=REPO,
                            capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    return result.stdout.strip()


@needs_backend
def test_a_token_revoked_mid_job_ends_its_jobs_and_the_next_token_is_used(tmp_path):
    """The artist's token is revoked while a job runs: the job ends with the worker's line and what to do
    (it used to stay running, holding back the new token until it ended, which it never did here), and a
    token then entered in the preferences is what the next Generate connects with."""
    port, tokens_file = _free_port(), tmp_path / "tokens"
    old, new = _tokens(tokens_file, "add", "alice"), _tokens(tokens_file, "add", "alice2")
    proc = _serve_remote(tmp_path, port, "--tokens", str(tokens_file))
    try:
        queue = job_queue.JobQueue(jobs.RemoteWorker("127.0.0.1", port, old), str(tmp_path / "jobs"))
        pump = Pump(queue)
        job = queue.submit(small_spec(steps=2000))
        pump.until(lambda: job.status == "running" and job.step >= 1)
        assert queue.signed_in_as() == "On the worker at 127.0.0.1:{:d} as alice".format(port)  # the Queue panel's line
        _tokens(tokens_file, "revoke", "alice")
        pump.until(lambda: job.finished, timeout=60)
        assert job.status == "failed" and "revoked" in job.error.message
        assert "paste it as Token in the add-on's preferences" in job.error.hint
        assert "paste it as Token" in queue.notice and not queue.busy
        queue.set_worker(jobs.RemoteWorker("127.0.0.1", port, new))  # what Generate does with the preferences
        again = queue.submit(small_spec())
        # The revoked artist's 2000-step job stopped at its next step (it used to run to its end first, and this
        # wait passed 120 s with two test suites sharing the two cores).
        pump.until(lambda: again.finished, timeout=240)
        assert again.status == "done", again.error
        queue.shutdown()
    finally:
        process_guard.end(proc)


def test_module_runs_without_blender(tmp_path):
    """The queue imports as part of the add-on package in a plain Python, never pulling in bpy."""
    code = ("import sys, types; pkg = types.ModuleType('scail2'); pkg.__path__ = [sys.argv[1]]; "
            "sys.modules['scail2'] = pkg; from scail2.core import job, queue; "
            "assert 'bpy' not in sys.modules; print(job.ACTIVE)")
    out = subprocess.run([sys.executable, "-c", code, REPO], cwd=str(tmp_path), capture_output=True, text=True,
                         timeout=60)
    assert out.returncode == 0, out.stderr


@needs_backend
def test_python_without_the_backend_packages_gets_the_setup_hint(tmp_path):
    """A Python that lacks torch (here: this test environment's own) cannot serve."""
    queue = job_queue.JobQueue(jobs.LocalWorker(sys.executable, ("--model", "tiny"), cwd=REPO), str(tmp_path))
    pump = Pump(queue)
    try:
        job = queue.submit(small_spec())
        pump.until(lambda: job.finished, timeout=60)
        assert job.status == "failed" and job.error.code == "worker_exited"
        assert "No module named" in job.error.message
        assert job.error.hint == job_queue.MISSING_PACKAGES_HINT
    finally:
        queue.shutdown()


@needs_backend
def test_killed_worker_is_named_as_such_and_its_job_resumes_in_its_folder(tmp_path):
    queue = job_queue.JobQueue(tiny_worker(), str(tmp_path))
    pump = Pump(queue)
    try:
        job = queue.submit(small_spec(steps=60))
        pump.until(lambda: job.status == "running" and job.step >= 1)
        os.kill(queue.client.pid, signal.SIGKILL)
        pump.until(lambda: job.finished, timeout=30)
        assert job.status == "failed" and job.error.code == "worker_exited"
        assert "signal 9" in job.error.message
        # Its last output line ("model loaded ...") is not the cause: the hint says what can be done instead.
        assert job.error.hint == job_queue.RESUME_HINT
        assert job.resumable
        again = queue.resume(job)
        pump.until(lambda: again.finished)
        assert again.status == "done", again.error
        assert again.job_dir == job.job_dir and again.meta["resumed_from"] == job.key
        with open(os.path.join(job.job_dir, "state.json"), encoding="utf-8") as fh:
            assert json.load(fh)["status"] == "done"
    finally:
        queue.shutdown()


def test_a_job_whose_folder_could_not_be_written_is_resumable_by_hand(tmp_path):
    (tmp_path / "manifest.json").write_text("{}")  # the worker had started the folder
    queue = job_queue.JobQueue(jobs.LocalWorker("/nowhere/python"), str(tmp_path))
    job = jobs.Job(key="k", spec={}, id="w1", status="queued", sent=True, job_dir=str(tmp_path))
    queue.jobs[job.key] = job
    queue._handle(dict(v=1, type="started", job="w1", frames=10, segments=1))
    queue._handle(dict(v=1, type="error", job="w1", code="output_error", message="cannot write frame_000003.png: "
                       "No space left on device", hint="free space or choose a writable folder, then resume"))
    assert job.status == "failed" and job.resumable
    assert job.error.code not in jobs.WORKER_STOPPED  # not resumed automatically: the disk would still be full


def test_a_shared_worker_says_how_many_jobs_of_other_artists_are_ahead():
    queue = job_queue.JobQueue(jobs.LocalWorker("/nowhere/python"), "/tmp/jobs", clock=FakeClock())
    job = jobs.Job(key="k", spec={}, status="submitting", sent=True)
    queue.jobs[job.key] = job
    queue._handle(dict(v=1, type="queued", request_id="k", job="w1", job_dir="/tmp/jobs/w1", position=3,
                       others_ahead=2))
    assert job.status == "queued" and job.phase_text() == "Queued (3 ahead, 2 of other artists)"
    queue._handle(dict(v=1, type="queued", request_id="k", job="w1", job_dir="/tmp/jobs/w1", position=1))
    assert job.phase_text() == "Queued (1 ahead)"  # a private worker: no one else's jobs


def test_an_error_about_the_connection_shows_what_to_do_in_the_notice(tmp_path):
    """A refused token (no job to fail): the panel's one line carries the worker's message and the hint."""
    queue = job_queue.JobQueue(tiny_worker(), str(tmp_path))  # no worker starts before a request
    queue._handle(protocol.decode_message(protocol.error_event(
        "unauthorized", "unauthorized: wrong, revoked or missing token; connection closed")))
    assert queue.notice == "unauthorized: wrong, revoked or missing token; connection closed"
    queue._handle({"v": 1, "type": "error", "code": "unauthorized", "message": "unauthorized: wrong token",
                   "hint": "paste a token of your own in the preferences"})
    assert queue.notice == "unauthorized: wrong token: paste a token of your own in the preferences"
    assert queue.client is None
