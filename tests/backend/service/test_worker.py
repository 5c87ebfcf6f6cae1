"""The job worker (`python -m backend serve`) in real subprocesses with the tiny profile: no mocks.

One worker serves most tests of this module; the kill/resume and TCP tests start their own.
Every test checks that frames reported as written are complete PNGs and that the worker
keeps serving afterwards.
"""

from __future__ import annotations

import json
import os
import queue
import re
import socket
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import process_guard
import pytest
from scail_fixtures import FOOTAGE, REPO

import protocol
from backend.service.jobs import OOM_HINT

DRIVING = str(FOOTAGE / "scail_001_driving.mp4")
REFERENCE = str(FOOTAGE / "scail_001_ref.jpg")
OOM_PROMPT = "simulate out of memory"
# A folder whose sitecustomize makes a job with OOM_PROMPT fail with CUDA out of memory (fault_hooks/).
FAULT_HOOKS = REPO / "tests" / "fault_hooks"
TEST_FAIL_OOM_ENV = "SCAIL2_TEST_FAIL_OOM"
TIMEOUT = 180.0

pytestmark = pytest.mark.slow


def small_job(**changes) -> dict:
    """A few frames of the real clip at 64x128, 2 steps."""
    settings = dict(driving=DRIVING, reference=REFERENCE, height=64, width=128, steps=2, seed=3, frame_end=5)
    return protocol.JobSpec(**(settings | changes)).to_dict()


def two_segment_job() -> dict:
    """The whole 65-frame clip resampled to 32 fps: 130 output frames, two segments (81 + 54)."""
    return small_job(frame_end=None, model_fps=32.0)


# -- checking frames ------------------------------------------------------------------------------


def png_is_complete(path) -> bool:
    """A whole PNG: signature, every chunk with a valid CRC, IEND, and all scanlines in the IDAT stream."""
    try:
        data = Path(path).read_bytes()
    except OSError:
        return False
    if not data.startswith(b"\x89PNG\r\n\x1a\n"):
        return False
    pos, idat, header, ended = 8, b"", None, False
    while pos + 8 <= len(data):
        length, kind = struct.unpack(">I4s", data[pos : pos + 8])
        body = data[pos + 8 : pos + 8 + length]
        crc = data[pos + 8 + length : pos + 12 + length]
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
        raw = zlib.decompress(idat)
    except zlib.error:
        return False
    return len(raw) == height * (1 + (width * channels * depth + 7) // 8)


def assert_frames_complete(paths) -> None:
    paths = list(paths)
    broken = [str(p) for p in paths if not png_is_complete(p)]
    assert not broken, f"incomplete or missing frames: {broken[:5]}"


def frames_of(events, job_id) -> list[str]:
    return [e["path"] for e in events if e["type"] == "frame_ready" and e.get("job") == job_id]


def read_rgb(path) -> np.ndarray:
    import cv2

    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


# -- a worker process -----------------------------------------------------------------------------


class WorkerProcess:
    """`python -m backend serve ...` with its stdout parsed line by line (every line must be protocol)."""

    def __init__(self, *args: str, env: dict | None = None, **popen):
        self.serves_tcp = "--listen" in args  # then stdin is not read: `stop` ends it as systemd would (SIGTERM)
        self.proc = process_guard.start(
            [sys.executable, "-m", "backend", "serve", *args], cwd=REPO,
            env={**os.environ, "PYTHONUNBUFFERED": "1", **(env or {})},
            stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE, **popen,
        )
        self.inbox: queue.Queue = queue.Queue()
        self.seen: list[dict] = []
        self.not_protocol: list[bytes] = []
        self.stderr: list[str] = []
        self.stderr_ready = threading.Condition()
        threading.Thread(target=self._read_stdout, daemon=True).start()
        threading.Thread(target=self._read_stderr, daemon=True).start()

    def _read_stdout(self):
        for line in self.proc.stdout:
            try:
                self.inbox.put(protocol.decode_message(line))
            except protocol.ProtocolError:
                self.not_protocol.append(line)

    def _read_stderr(self):
        for line in self.proc.stderr:
            with self.stderr_ready:
                self.stderr.append(line.decode("utf-8", "replace"))
                self.stderr_ready.notify_all()

    def wait_stderr(self, pattern: str, timeout: float = 60.0) -> re.Match:
        deadline = time.monotonic() + timeout
        with self.stderr_ready:
            while True:
                for line in self.stderr:
                    if match := re.search(pattern, line):
                        return match
                assert time.monotonic() < deadline, f"no {pattern!r} on stderr: {''.join(self.stderr)[-2000:]}"
                self.stderr_ready.wait(0.5)

    def send(self, kind: str, **fields) -> None:
        self.write(protocol.encode_message(kind, **fields).encode())

    def write(self, data: bytes) -> None:
        self.proc.stdin.write(data)
        self.proc.stdin.flush()

    def wait_for(self, predicate, timeout: float = TIMEOUT) -> dict:
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            assert left > 0 and self.proc.poll() is None, (
                f"worker status {self.proc.poll()}; last messages {self.seen[-5:]}; "
                f"stderr {''.join(self.stderr)[-2000:]}"
            )
            try:
                message = self.inbox.get(timeout=min(left, 1.0))
            except queue.Empty:
                continue
            self.seen.append(message)
            if predicate(message):
                return message

    def reply(self, kind: str, timeout: float = 60.0, **fields) -> dict:
        """Send a request and return its direct answer (matched by request_id)."""
        request_id = f"r{time.monotonic_ns()}"
        self.send(kind, request_id=request_id, **fields)
        return self.wait_for(lambda m: m.get("request_id") == request_id, timeout)

    def submit(self, job: dict, job_dir=None) -> dict:
        fields = {"job": job} | ({"job_dir": str(job_dir)} if job_dir else {})
        answer = self.reply("submit", **fields)
        assert answer["type"] == "queued", answer
        return answer

    def finish(self, job_id: str, timeout: float = TIMEOUT) -> list[dict]:
        """Every message of `job_id` until it ends (done, cancelled or error)."""
        start = len(self.seen)
        self.wait_for(lambda m: m.get("job") == job_id and m["type"] in ("done", "cancelled", "error"), timeout)
        return [m for m in self.seen[start:] if m.get("job") == job_id]

    def stop(self) -> int:
        if self.serves_tcp:
            return process_guard.end(self.proc, timeout=60)
        if self.proc.poll() is None:
            try:
                self.send("shutdown")
                self.proc.stdin.close()
            except OSError:
                pass
            try:
                return self.proc.wait(timeout=60)
            except subprocess.TimeoutExpired:
                self.proc.kill()
        return self.proc.wait()


@pytest.fixture(scope="module")
def worker(tmp_path_factory):
    jobs_root = tmp_path_factory.mktemp("jobs")
    faults = {TEST_FAIL_OOM_ENV: OOM_PROMPT,
              "PYTHONPATH": os.pathsep.join([str(FAULT_HOOKS), os.environ.get("PYTHONPATH", "")])}
    process = WorkerProcess("--model", "tiny", "--jobs-root", str(jobs_root), env=faults)
    process.jobs_root = jobs_root
    yield process
    status = process.stop()
    assert status == 0, "".join(process.stderr)[-3000:]
    assert not process.not_protocol, f"non-protocol output on stdout: {process.not_protocol[:3]}"


def assert_still_serving(worker) -> None:
    answer = worker.reply("hello")
    assert answer["type"] == "capabilities", answer


# -- tests ----------------------------------------------------------------------------------------


def test_hello_reports_capabilities(worker):
    caps = worker.reply("hello")
    assert caps["type"] == "capabilities"
    assert caps["protocol"] == protocol.PROTOCOL_VERSION and caps["backend"]
    assert caps["python"].count(".") == 2 and caps["torch"]
    assert caps["cuda"]["available"] in (True, False)
    assert caps["model"]["name"] == "tiny" and caps["model"]["noise_only"] is True and caps["model"]["label"]
    # Listed once diffusers is imported (here the fault hook's patch may have imported it); None before.
    assert caps.get("attention_backends") is None or "native" in caps["attention_backends"]
    assert set(caps["requests"]) == set(protocol.REQUESTS)


def test_the_first_hello_does_not_wait_for_diffusers(tmp_path):
    """hello is answered before the networks' imports (issue 29: diffusers was 5.8 of 7.3 s); the attention
    backends are listed once a job has imported it."""
    process = WorkerProcess("--model", "tiny", "--jobs-root", str(tmp_path / "jobs"))
    try:
        first = process.reply("hello")
        assert first["type"] == "capabilities" and first.get("attention_backends") is None  # unset: off the wire
        assert first["model"]["label"].startswith("tiny")  # the label, without importing the tiny networks
        job = process.submit(small_job(), tmp_path / "job")
        assert process.finish(job["job"])[-1]["type"] == "done"
        assert "native" in process.reply("hello")["attention_backends"]
    finally:
        assert process.stop() == 0, "".join(process.stderr)[-3000:]


def test_garbage_lines_get_error_replies_and_never_kill_the_worker(worker):
    garbage = [
        b"garbage\n", b"[1, 2]\n", b'{"v": 1, "type": "explode"}\n', b'{"v": 99, "type": "hello"}\n',
        b'{"v": 1, "type": "done"}\n', b"\xff\xfe\x00 not utf-8\n", b"{" * 100 + b"\n",
        b"x" * (2 << 20) + b"\n",  # longer than any request may be
        protocol.encode_message("submit").encode(),  # no job
        protocol.encode_message("submit", job={"driving": "a"}).encode(),  # incomplete job
        protocol.encode_message("submit", job=small_job(), job_dir=5).encode(),
        protocol.encode_message("resume").encode(),
        protocol.encode_message("resume", job_dir="/no/such/folder").encode(),
    ]
    for line in garbage:
        worker.write(line)
    errors = [worker.wait_for(lambda m: m["type"] == "error", 60) for _ in garbage]
    assert [e["code"] for e in errors] == ["bad_request"] * 8 + ["bad_request", "bad_input", "bad_request",
                                                                   "bad_request", "bad_request"]
    assert all("\n" not in e["message"] and e["message"] for e in errors)
    unknown = worker.reply("cancel", job="no-such-job")
    assert unknown["type"] == "error" and unknown["code"] == "unknown_job"
    assert_still_serving(worker)


def test_two_jobs_run_one_at_a_time_in_submission_order(worker, tmp_path):
    first = worker.submit(small_job(frame_end=9), tmp_path / "first")
    second = worker.submit(small_job(prompt="second"), tmp_path / "second")
    assert second["position"] == 1
    listed = worker.reply("list_jobs")
    statuses = {j["job"]: j["status"] for j in listed["jobs"] if j["job"]}
    assert statuses.get(second["job"]) == "queued"
    first_events = worker.finish(first["job"])
    second_events = worker.finish(second["job"])
    assert first_events[-1]["type"] == "done" and second_events[-1]["type"] == "done"
    order = [(m.get("job"), m["type"]) for m in worker.seen if m["type"] in ("started", "done")]
    jobs = [job for job, _ in order if job in (first["job"], second["job"])]
    assert jobs == [first["job"], first["job"], second["job"], second["job"]]  # never interleaved
    started = next(m for m in first_events if m["type"] == "started")
    assert started["frames"] == 9 and started["segments"] == 1 and started["noise_only"] is True
    for job_id, count in ((first["job"], 9), (second["job"], 5)):
        paths = frames_of(worker.seen, job_id)
        assert len(paths) == count
        assert_frames_complete(paths)
    done = first_events[-1]
    manifest = json.loads(Path(done["manifest"]).read_text())
    assert manifest["status"] == "done" and len(manifest["frames"]) == 9
    # the worker reviews each take before it says done: scores in the manifest, review.json beside it
    assert len(manifest["review"]["scores"]["scores"]) == 5
    assert (Path(done["manifest"]).parent / protocol.REVIEW_NAME).is_file()
    progress = [m for m in first_events if m["type"] == "progress" and m["phase"] == "sample"]
    assert [(m["step"], m["steps"]) for m in progress] == [(1, 2), (2, 2)]


def test_cancel_mid_job_keeps_frames_and_the_job_resumes(worker, tmp_path):
    job_dir = tmp_path / "cancelled"
    queued = worker.submit(two_segment_job(), job_dir)
    job_id = queued["job"]
    worker.wait_for(lambda m: m.get("job") == job_id and m["type"] == "progress" and m["phase"] == "sample")
    worker.send("cancel", job=job_id)
    events = worker.finish(job_id)
    end = events[-1]
    assert end["type"] == "cancelled" and end["was"] == "running", end
    assert end["completed_segments"] < 2
    assert_frames_complete(frames_of(events, job_id))
    assert_frames_complete((job_dir / "frames").glob("*.png"))
    state = json.loads((job_dir / "state.json").read_text())
    assert state["status"] == "cancelled" and state["completed_segments"] == end["completed_segments"]

    # A queued job is removed at once.
    blocker = worker.submit(small_job(), tmp_path / "blocker")
    waiting = worker.submit(small_job(prompt="never runs"), tmp_path / "waiting")
    worker.send("cancel", job=waiting["job"])
    removed = worker.wait_for(lambda m: m.get("job") == waiting["job"] and m["type"] == "cancelled")
    assert removed["was"] == "queued"
    assert worker.finish(blocker["job"])[-1]["type"] == "done"
    assert not (tmp_path / "waiting").exists()

    # The cancelled job is listed as unfinished and resumes to the end.
    listed = worker.reply("list_jobs")["jobs"]
    entry = next(j for j in listed if j["job_dir"] == str(job_dir.resolve()))
    assert entry["status"] == "unfinished" and entry["segments"] == 2 and entry["frames"] == 130
    resumed = worker.reply("resume", job_dir=str(job_dir))
    assert resumed["type"] == "queued", resumed
    events = worker.finish(resumed["job"])
    assert events[-1]["type"] == "done", events[-1]
    assert_frames_complete(job_dir / f"frames/frame_{k:06d}.png" for k in range(130))
    again = worker.reply("resume", job_dir=str(job_dir))
    assert again["type"] == "error" and "already finished" in again["message"]


def test_bad_input_is_reported_before_model_work_and_the_next_job_runs(worker, tmp_path):
    missing = worker.reply("submit", job=small_job(reference=str(tmp_path / "missing.png")))
    assert missing["type"] == "error" and missing["code"] == "bad_input"
    assert "reference image not found" in missing["message"]

    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    unreadable = worker.reply("submit", job=small_job(driving=str(broken)), job_dir=str(tmp_path / "broken_job"))
    assert unreadable["type"] == "error" and unreadable["code"] == "bad_input", unreadable
    assert "cannot decode video" in unreadable["message"]  # from the container, at once

    from backend.pipeline.durable import write_preview_mp4

    short_mask = tmp_path / "short_mask.mp4"  # what only reading the whole job tells: too few mask frames
    write_preview_mp4(short_mask, np.zeros((3, 64, 64, 3), np.uint8), 16.0)
    queued = worker.submit(small_job(driving_mask=str(short_mask)), tmp_path / "short_mask_job")
    events = worker.finish(queued["job"])
    assert events[-1]["type"] == "error" and events[-1]["code"] == "bad_input", events[-1]
    assert "driving mask has 3 frames" in events[-1]["message"]
    assert not any(m["type"] in ("started", "progress") for m in events)

    queued = worker.submit(small_job(), tmp_path / "after_bad_input")
    events = worker.finish(queued["job"])
    assert events[-1]["type"] == "done"
    assert_frames_complete(frames_of(events, queued["job"]))


def submit_task(worker, task: str, job: dict, job_dir) -> dict:
    answer = worker.reply("submit", task=task, job=job, job_dir=str(job_dir))
    assert answer["type"] == "queued", answer
    return answer


def test_masks_and_matte_jobs_report_progress_and_write_complete_frames(worker, tmp_path):
    masks = submit_task(worker, "masks", {"source": DRIVING, "frame_end": 3, "max_identities": 2}, tmp_path / "m")
    matte = submit_task(worker, "matte", {"source": DRIVING, "frame_start": 5, "frame_end": 7}, tmp_path / "a")
    events = worker.finish(masks["job"])
    started, done = events[0], events[-1]
    assert started["type"] == "started" and started["task"] == "masks" and started["frames"] == 3
    assert done["type"] == "done" and done["task"] == "masks" and done["frames"] == 3, done
    assert 1 <= len(done["identities"]) <= 2 and done["job_dir"] == str((tmp_path / "m").resolve())
    assert [m["frame"] for m in events if m["type"] == "progress" and m["phase"] == "segment"] == [1, 2, 3]
    assert_frames_complete(tmp_path / f"m/mask_{t:05d}.png" for t in range(3))
    assert json.loads(Path(done["record"]).read_text())["status"] == "done"
    done = worker.finish(matte["job"])[-1]
    assert done["type"] == "done" and done["identities"] == [], done
    for name in ("frame_00005.png", "frame_00006.png"):
        assert_frames_complete([tmp_path / "a" / name])
        assert read_rgb(tmp_path / "a" / name).shape == (1080, 2048, 4)


def test_a_generation_with_matte_writes_rgba_frames_before_it_is_done(worker, tmp_path):
    queued = worker.submit(small_job(matte=True, matte_prompt="dog", frame_end=3), tmp_path / "g")
    events = worker.finish(queued["job"])
    assert events[-1]["type"] == "done", events[-1]
    assert [m["type"] for m in events].count("started") == 1
    matte = [(m["stage"], m["frame"]) for m in events if m["type"] == "progress" and m["phase"] == "matte"]
    assert matte == [("segment", 1), ("segment", 2), ("segment", 3), ("write", 1), ("write", 2), ("write", 3)]
    manifest = json.loads(Path(events[-1]["manifest"]).read_text())
    assert manifest["matte"] == protocol.MATTE_FOLDER
    record = json.loads((tmp_path / "g" / protocol.MATTE_FOLDER / protocol.SEGMENT_RECORD).read_text())
    assert record["status"] == "done" and record["files"] == [f"frame_{k:06d}.png" for k in range(3)]
    assert record["prompt"] == "dog"
    for name in record["files"]:
        rgba, rgb = read_rgb(tmp_path / "g" / protocol.MATTE_FOLDER / name), read_rgb(tmp_path / "g" / "frames" / name)
        assert rgba.shape == (64, 128, 4) and np.array_equal(rgba[..., :3], rgb)


def test_a_masks_job_cancels_within_a_frame_and_bad_segment_input_is_refused_at_once(worker, tmp_path):
    queued = submit_task(worker, "masks", {"source": DRIVING}, tmp_path / "c")
    worker.wait_for(lambda m: m.get("job") == queued["job"] and m["type"] == "progress" and m["phase"] == "segment")
    worker.send("cancel", job=queued["job"])
    end = worker.finish(queued["job"])[-1]
    assert end["type"] == "cancelled" and end["was"] == "running", end
    assert not (tmp_path / "c" / protocol.SEGMENT_RECORD).exists()
    os.mkfifo(tmp_path / "pipe.mp4")  # a job reading it would wait for a writer: refused at submit
    refusals = [
        ("masks", {"source": str(tmp_path / "missing.mp4")}, "clip not found"),
        ("masks", {"source": str(tmp_path / "pipe.mp4")}, "clip not found"),
        ("masks", {"source": DRIVING, "max_identities": 7}, "7 were asked for"),
        ("paint", {"source": DRIVING}, "task must be one of"),
    ]
    for task, job, message in refusals:
        answer = worker.reply("submit", task=task, job=job)
        assert answer["type"] == "error" and answer["code"] == "bad_input" and message in answer["message"], answer
    assert_still_serving(worker)


def test_a_worker_without_segmentation_weights_refuses_masks_and_mattes_at_submit(tmp_path):
    env = {"HF_HUB_CACHE": str(tmp_path / "empty_hub"), "HF_HOME": str(tmp_path / "hf")}
    process = WorkerProcess("--weights", str(tmp_path / "no_scail"), "--sam3-weights", str(tmp_path / "no_sam3"),
                            "--jobs-root", str(tmp_path / "jobs"), env=env)
    try:
        for task, job in (("masks", {"source": DRIVING}), ("matte", {"source": DRIVING}),
                          ("generate", small_job(matte=True))):
            answer = process.reply("submit", task=task, job=job)
            assert answer["type"] == "error" and answer["code"] == "bad_input", answer
            assert "no_sam3 is not a folder: download 'facebook/sam3'" in answer["message"]
        answer = process.reply("submit", task="masks", job={"source": DRIVING, "subjects": [{"box": [1, 1, 9, 9]}]})
        assert "'facebook/sam2.1-hiera-large' is not in the Hugging Face hub cache" in answer["message"], answer
    finally:
        assert process.stop() == 0


def test_out_of_memory_gives_a_hint_frees_the_model_and_the_next_job_runs(worker, tmp_path):
    queued = worker.submit(small_job(prompt=OOM_PROMPT), tmp_path / "oom")
    error = worker.finish(queued["job"])[-1]
    assert error["type"] == "error" and error["code"] == "out_of_memory", error
    assert error["hint"] == OOM_HINT and "out of memory" in error["message"] and "\n" not in error["message"]
    assert worker.reply("hello")["model"]["loaded"] is False  # freed after the failure

    queued = worker.submit(small_job(), tmp_path / "after_oom")
    events = worker.finish(queued["job"])
    assert events[-1]["type"] == "done"
    assert_frames_complete(frames_of(events, queued["job"]))
    freed = worker.reply("free_memory")
    assert freed["type"] == "ok" and freed["freed"] is True
    assert worker.reply("hello")["model"]["loaded"] is False


def tiny_lora_file(folder: Path) -> Path:
    """A rank-4 LoRA for one projection of the tiny model, as a safetensors file."""
    import torch
    from safetensors.torch import save_file

    generator = torch.Generator().manual_seed(0)
    lora = folder / "tiny_lora.safetensors"
    save_file({
        "diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.randn(4, 48, generator=generator) * 0.05,
        "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.randn(48, 4, generator=generator) * 0.05,
        "diffusion_model.blocks.0.self_attn.q.alpha": torch.tensor(8.0),
    }, lora)
    return lora


def test_a_job_with_other_loras_reloads_the_model_and_a_broken_lora_is_bad_input(worker, tmp_path):
    lora = tiny_lora_file(tmp_path)
    queued = worker.submit(small_job(loras=[{"path": str(lora), "strength": 0.5}]), tmp_path / "with_lora")
    events = worker.finish(queued["job"])
    assert events[-1]["type"] == "done", events[-1]
    manifest = json.loads(Path(events[-1]["manifest"]).read_text())
    assert len(manifest["model"]["loras"]) == 1
    assert len(worker.reply("hello")["model"]["loras"]) == 1

    broken = tmp_path / "broken_lora.safetensors"
    broken.write_bytes(b"not a safetensors file at all")
    # Refused from its header at once, in reply to the submit: the kept model is not touched.
    error = worker.reply("submit", job=small_job(loras=[{"path": str(broken), "strength": 1.0}]),
                         job_dir=str(tmp_path / "broken_lora"))
    assert error["type"] == "error" and error["code"] == "bad_input", error
    assert "neither a safetensors file nor a torch checkpoint" in error["message"]
    assert len(worker.reply("hello")["model"]["loras"]) == 1

    queued = worker.submit(small_job(), tmp_path / "without_lora")
    events = worker.finish(queued["job"])
    assert events[-1]["type"] == "done"
    assert worker.reply("hello")["model"]["loras"] == []
    assert_frames_complete(frames_of(worker.seen, queued["job"]))


def test_sigkill_mid_job_then_restart_and_resume_gives_the_uninterrupted_frames(worker, tmp_path):
    whole_dir = tmp_path / "whole"
    whole = worker.finish(worker.submit(two_segment_job(), whole_dir)["job"])
    assert whole[-1]["type"] == "done"

    jobs_root = tmp_path / "jobs"
    killed_dir = jobs_root / "killed"
    victim = WorkerProcess("--model", "tiny", "--jobs-root", str(jobs_root))
    try:
        job_id = victim.submit(two_segment_job(), killed_dir)["job"]
        # The first segment's frames are written while the second segment samples (issue 29); once they are
        # reported its state is saved: killed after that, the job resumes from segment 2.
        victim.wait_for(lambda m: m.get("job") == job_id and m["type"] == "progress" and m.get("segment") == 2
                        and len(frames_of(victim.seen, job_id)) >= 81)
        victim.proc.kill()
        victim.proc.wait(30)
    finally:
        if victim.proc.poll() is None:
            victim.proc.kill()
    assert not victim.not_protocol
    reported = frames_of(victim.seen, job_id)
    assert len(reported) >= 81
    assert_frames_complete(reported)
    assert_frames_complete(killed_dir.glob("frames/*.png"))
    state = json.loads((killed_dir / "state.json").read_text())
    assert state["status"] == "running" and state["completed_segments"] == 1

    restarted = WorkerProcess("--model", "tiny", "--jobs-root", str(jobs_root))
    try:
        listed = restarted.reply("list_jobs")["jobs"]
        # state.json still says "running", but its writer is dead: the folder is reported interrupted.
        assert [(j["job_dir"], j["status"], j["state"], j["completed_segments"]) for j in listed] == [
            (str(killed_dir.resolve()), "unfinished", "interrupted", 1)
        ]
        resumed = restarted.reply("resume", job_dir=str(killed_dir))
        assert resumed["was"] == "interrupted", resumed
        events = restarted.finish(resumed["job"])
        assert events[-1]["type"] == "done", events[-1]
        started = next(m for m in events if m["type"] == "started")
        assert started["completed_segments"] == 1 and started["interrupted"] is True
        assert min(int(e["index"]) for e in events if e["type"] == "frame_ready") == 81  # only the rest
        assert restarted.reply("list_jobs")["jobs"] == []
    finally:
        assert restarted.stop() == 0
    for k in range(130):
        name = f"frames/frame_{k:06d}.png"
        assert png_is_complete(killed_dir / name)
        np.testing.assert_array_equal(read_rgb(killed_dir / name), read_rgb(whole_dir / name), err_msg=name)


# -- TCP ------------------------------------------------------------------------------------------


class Connection:
    def __init__(self, port: int):
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=60)
        self.file = self.sock.makefile("rb")

    def send(self, kind: str, **fields) -> None:
        self.sock.sendall(protocol.encode_message(kind, **fields).encode())

    def receive(self) -> dict:
        line = self.file.readline()
        assert line, "connection closed"
        return protocol.decode_message(line)

    def close(self):
        self.file.close()
        self.sock.close()


TOKEN = "s3cret-s3cret-s3cret"


def test_tcp_requires_the_token_on_every_request(tmp_path):
    server = WorkerProcess("--model", "tiny", "--jobs-root", str(tmp_path / "jobs"), "--listen", "127.0.0.1:0",
                           "--token", TOKEN)
    try:
        port = int(server.wait_stderr(r"listening on 127\.0\.0\.1:(\d+)").group(1))
        # A request without the token, or with a wrong one, is refused and its connection closed.
        for fields in ({}, {"token": "wrong"}, {"token": TOKEN + "-not"}):
            stranger = Connection(port)
            stranger.send("hello", **fields)
            assert stranger.receive()["code"] == "unauthorized"
            assert stranger.file.readline() == b""
            stranger.close()
        stranger, client = Connection(port), Connection(port)
        stranger.sock.sendall(b"garbage\n")
        assert stranger.receive()["code"] == "bad_request"

        client.send("hello", token=TOKEN)
        assert client.receive()["type"] == "capabilities"
        client.send("submit", job=small_job(), job_dir=str(tmp_path / "tcp_job"), token=TOKEN)
        queued = client.receive()
        assert queued["type"] == "queued"
        events = []
        while not events or events[-1]["type"] not in ("done", "error"):
            events.append(client.receive())
        assert events[-1]["type"] == "done"
        assert_frames_complete(frames_of(events, queued["job"]))
        # The stranger never made an authorised request: it saw none of the job's events.
        stranger.sock.settimeout(0.5)
        heard = []
        try:
            while line := stranger.file.readline():  # at most the auth timeout's farewell
                heard.append(protocol.decode_message(line))
        except TimeoutError:
            pass
        assert all(m["type"] == "error" and m["code"] == "unauthorized" for m in heard), heard
        stranger.close()

        client.send("shutdown", token=TOKEN)
        assert client.receive() == {"v": 1, "type": "ok", "request": "shutdown"}
        assert server.proc.wait(60) == 0
        client.close()
    finally:
        if server.proc.poll() is None:
            server.proc.kill()
    assert not server.not_protocol


def test_a_short_token_is_refused_at_start(tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--model", "tiny", "--listen", "127.0.0.1:0", "--token", "s3cret"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and "at least 16 characters" in result.stderr and result.stdout == ""


@pytest.mark.parametrize("option, value, says", [
    ("--blob-cap-gb", "inf", "--blob-cap-gb must be a number of GB above 0, not inf"),  # was a traceback
    ("--blob-cap-gb", "-5", "--blob-cap-gb must be a number of GB above 0, not -5"),  # was taken: no upload kept
    ("--max-queued-per-artist", "-1", "--max-queued-per-artist must be 0 (no limit) or more, not -1"),
    ("--idle-timeout", "nan", "--idle-timeout must be a number of seconds above 0, not nan"),
])
def test_limits_no_worker_could_keep_are_refused_at_start_in_one_line(tmp_path, option, value, says):
    result = subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--model", "tiny", "--listen", "127.0.0.1:0", "--jobs-root",
         str(tmp_path / "jobs"), f"{option}={value}"],
        cwd=REPO, capture_output=True, text=True, timeout=120,
    )
    assert result.returncode == 2 and result.stderr == f"error: {says}\n" and result.stdout == ""
    assert not (tmp_path / "jobs").exists()
