"""The worker under faults, in real subprocesses with the tiny profile: it keeps serving, keeps its
model through folder faults, honours cancel outside sampling, exits cleanly, and keeps accepting
TCP connections whatever idle clients do (loopback only)."""

from __future__ import annotations

import json
import resource
import shutil
import signal
import socket
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from scail_fixtures import REPO
from test_worker import Connection, WorkerProcess, frames_of, small_job

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    process = WorkerProcess("--model", "tiny", "--jobs-root", str(tmp_path_factory.mktemp("jobs")))
    yield process
    assert process.stop() == 0, "".join(process.stderr)[-3000:]
    assert not process.not_protocol


def refused(worker, job: dict, job_dir) -> str:
    """The error that answers a submit at once (bad_input), its message."""
    answer = worker.reply("submit", job=job, job_dir=str(job_dir))
    assert answer["type"] == "error" and answer["code"] == "bad_input", answer
    assert "\n" not in answer["message"]
    return answer["message"]


def files(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def test_folders_that_cannot_take_a_job_are_refused_at_submit_and_left_as_they_were(worker, tmp_path):
    done = worker.finish(worker.submit(small_job(), tmp_path / "done")["job"])
    assert done[-1]["type"] == "done"

    (tmp_path / "a_file").write_text("mine")
    foreign = tmp_path / "foreign"
    (foreign / "frames").mkdir(parents=True)
    (foreign / "frames" / "frame_000000.png").write_bytes(b"the user's own frame")
    truncated = Path(shutil.copytree(tmp_path / "done", tmp_path / "truncated"))
    (truncated / "manifest.json").write_text((truncated / "manifest.json").read_text()[:80])
    big_seed = Path(shutil.copytree(tmp_path / "done", tmp_path / "big_seed"))
    state = json.loads((big_seed / "state.json").read_text())
    (big_seed / "state.json").write_text(json.dumps(state | {"seed": 2**70}))
    for folder, message in ((tmp_path / "a_file", "is a file, not a folder"),
                            (foreign, "is not empty and holds no SCAIL-2 job"),
                            (truncated, "manifest.json is damaged"),
                            (big_seed, "holds the seed 1180591620717411303424")):
        before = files(folder) if folder.is_dir() else folder.read_bytes()
        assert message in refused(worker, small_job(), folder), folder
        assert (files(folder) if folder.is_dir() else folder.read_bytes()) == before

    busy = tmp_path / "busy"
    code = textwrap.dedent(f"""
        import time
        from backend.pipeline.job_folder import FolderClaim
        FolderClaim({str(busy)!r}).claim()
        print("claimed", flush=True)
        time.sleep(120)
    """)
    other = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        assert other.stdout.readline().strip() == "claimed"
        assert f"being written by another run (PID {other.pid})" in refused(worker, small_job(), busy)
    finally:
        other.kill()
        other.wait()

    not_a_lora = tmp_path / "model.safetensors"
    from safetensors.torch import save_file
    import torch

    save_file({"blocks.0.ffn.0.weight": torch.zeros(2, 2)}, not_a_lora)
    message = refused(worker, small_job(loras=[{"path": str(not_a_lora), "strength": 1.0}]), tmp_path / "lora")
    assert "holds no LoRA tensors" in message
    assert worker.reply("hello")["model"]["loaded"] is True  # nothing above touched the kept model


def test_an_output_failure_keeps_the_model_and_deleted_frames_are_made_again(worker, tmp_path):
    job_dir = tmp_path / "job"
    first = worker.finish(worker.submit(small_job(), job_dir)["job"])
    assert first[-1]["type"] == "done"
    original = files(job_dir / "frames")

    # The job's own folder, but frames/ is now a file: the run cannot write its frames.
    blocked = Path(shutil.copytree(job_dir, tmp_path / "blocked"))
    shutil.rmtree(blocked / "frames")
    (blocked / "frames").write_text("in the way")
    (blocked / "state.json").write_text(json.dumps(json.loads((blocked / "state.json").read_text())
                                                   | {"status": "cancelled", "completed_segments": 0}))
    error = worker.finish(worker.reply("resume", job_dir=str(blocked))["job"])[-1]
    assert error["type"] == "error" and error["code"] == "output_error", error
    assert "cannot write" in error["message"] and "resume" in error["hint"]
    assert worker.reply("hello")["model"]["loaded"] is True  # no reload (minutes with real weights)

    # A finished job whose frames were deleted by hand is not "already finished": resume makes them again.
    for k in (0, 3):
        (job_dir / f"frames/frame_{k:06d}.png").unlink()
    listed = {j["job_dir"]: j for j in worker.reply("list_jobs")["jobs"]}
    assert listed[str(job_dir.resolve())]["frames_written"] == 3
    resumed = worker.reply("resume", job_dir=str(job_dir))
    assert resumed["type"] == "queued", resumed
    events = worker.finish(resumed["job"])
    assert events[-1]["type"] == "done", events[-1]
    assert next(m for m in events if m["type"] == "started")["missing_frames"] == 2
    assert files(job_dir / "frames") == original


def test_a_cancel_during_the_decode_ends_the_job_cancelled_within_a_latent_frame(worker, tmp_path):
    job_dir = tmp_path / "decode"
    job_id = worker.submit(small_job(frame_end=65), job_dir)["job"]  # 17 latent frames to decode
    worker.wait_for(lambda m: m.get("job") == job_id and m["type"] == "progress" and m["phase"] == "decode")
    worker.send("cancel", job=job_id)
    sent = time.monotonic()
    events = worker.finish(job_id)
    assert events[-1]["type"] == "cancelled" and events[-1]["was"] == "running", events[-1]
    assert time.monotonic() - sent < 20
    assert not frames_of(events, job_id) and not list((job_dir / "frames").iterdir())
    state = json.loads((job_dir / "state.json").read_text())
    assert state["status"] == "cancelled" and state["completed_segments"] == 0


def test_shutdown_right_after_a_job_exits_cleanly(tmp_path):
    """A daemon thread that frees tensors while the interpreter finalizes aborts it ("terminate called
    without an active exception"); before the fix about one exit in three did."""
    for attempt in range(3):
        process = WorkerProcess("--model", "tiny", "--jobs-root", str(tmp_path / f"jobs{attempt}"))
        events = process.finish(process.submit(small_job(frame_end=5))["job"])
        assert events[-1]["type"] == "done", events[-1]
        assert process.stop() == 0, "".join(process.stderr)[-1500:]
        assert not any("terminate called" in line for line in process.stderr)


def test_a_terminated_worker_cancels_its_running_job_so_it_resumes(tmp_path):
    process = WorkerProcess("--model", "tiny", "--jobs-root", str(tmp_path / "jobs"))
    job_dir = tmp_path / "job"
    job_id = process.submit(small_job(steps=400), job_dir)["job"]
    process.wait_for(lambda m: m.get("job") == job_id and m["type"] == "progress" and m.get("phase") == "sample")
    process.proc.send_signal(signal.SIGTERM)  # as systemd or a farm's job manager stops it
    assert process.proc.wait(timeout=60) == 0, "".join(process.stderr)[-2000:]
    assert json.loads((job_dir / "state.json").read_text())["status"] == "cancelled"
    assert not any("Traceback" in line for line in process.stderr)


# -- TCP ------------------------------------------------------------------------------------------


def tcp_worker(tmp_path, *args: str, **popen) -> tuple[WorkerProcess, int]:
    server = WorkerProcess("--model", "tiny", "--jobs-root", str(tmp_path / "jobs"), "--listen", "127.0.0.1:0",
                           *args, **popen)
    return server, int(server.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)").group(1))


def test_connections_over_the_limit_are_refused_in_one_line_and_silent_ones_are_closed(tmp_path):
    server, port = tcp_worker(tmp_path, "--max-connections", "2", "--auth-timeout", "1", "--idle-timeout", "4")
    try:
        client = Connection(port)
        client.send("hello")
        assert client.receive()["type"] == "capabilities"
        silent, extra = Connection(port), Connection(port)
        refusal = extra.receive()
        assert refusal["type"] == "error" and refusal["code"] == "too_many_connections", refusal
        assert extra.file.readline() == b""  # and closed
        timed_out = silent.receive()  # no request within a second
        assert timed_out["code"] == "unauthorized" and "no authorised request within 1 s" in timed_out["message"]
        assert silent.file.readline() == b""
        time.sleep(1.5)  # an authorised connection may stay idle
        client.send("hello")
        assert client.receive()["type"] == "capabilities"
        later = Connection(port)  # the silent one's place is free again
        later.send("hello")
        assert later.receive()["type"] == "capabilities"
        started = time.monotonic()
        time.sleep(2)
        later.send("ping")  # heard from: it stays
        assert later.receive() == {"v": 1, "type": "ok", "request": "ping"}
        idle = client.receive()  # the first connection says nothing for the idle timeout: closed
        assert idle["code"] == "idle_timeout" and "nothing heard for 4 s" in idle["message"], idle
        assert client.file.readline() == b"" and time.monotonic() - started < 10
        later.send("shutdown")
        assert later.receive()["type"] == "ok"
        assert server.proc.wait(60) == 0
    finally:
        if server.proc.poll() is None:
            server.proc.kill()


def test_idle_connections_that_use_up_every_descriptor_never_stop_the_accept_loop(tmp_path):
    def few_descriptors():
        resource.setrlimit(resource.RLIMIT_NOFILE, (24, resource.getrlimit(resource.RLIMIT_NOFILE)[1]))

    server, port = tcp_worker(tmp_path, "--max-connections", "100", "--auth-timeout", "2",
                              preexec_fn=few_descriptors)
    idle = []
    try:
        idle = [socket.create_connection(("127.0.0.1", port), timeout=30) for _ in range(40)]
        server.wait_stderr(r"cannot accept connections: Too many open files \(\d+ open\); retrying", timeout=30)
        # Every idle one is accepted in turn (as others time out and free their descriptors) and closed.
        for sock in idle:
            received = b""
            while chunk := sock.recv(4096):
                received += chunk
            assert b"no authorised request within 2 s" in received
        server.wait_stderr("accepting connections again", timeout=5)
        client = Connection(port)
        client.sock.settimeout(60)
        client.send("hello")
        assert client.receive()["type"] == "capabilities"
        client.send("shutdown")
        assert client.receive()["type"] == "ok"
        assert server.proc.wait(60) == 0
    finally:
        for sock in idle:
            sock.close()
        if server.proc.poll() is None:
            server.proc.kill()
