"""The worker's check_inputs request, in a real `python -m backend serve` process over stdin/stdout."""

from __future__ import annotations

import subprocess
import sys

from check_clips import FOOTAGE, steady, still, write_reference, write_sequence
from scail_fixtures import REPO

import protocol


def _ask(proc, request_id: str, job: dict) -> dict:
    proc.stdin.write(protocol.encode_message("check_inputs", request_id=request_id, job=job).encode())
    proc.stdin.flush()
    for line in proc.stdout:
        message = protocol.decode_message(line)
        if message.get("request_id") == request_id:
            return message
    raise AssertionError("the worker ended without answering")


def test_check_inputs_request_answers_with_the_report(tmp_path):
    frames = steady(still(), 5) + steady(still("scail_001_ref.jpg"), 5, seed=1)
    job = protocol.JobSpec(driving=str(write_sequence(tmp_path / "driving", frames)), driving_fps=16.0,
                           reference=str(write_reference(tmp_path / "reference.png", frames[0]))).to_dict()
    proc = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--model", "tiny", "--jobs-root",
                             str(tmp_path / "jobs")], cwd=REPO, stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                            stderr=subprocess.DEVNULL)
    try:
        answer = _ask(proc, "c1", job)
        assert answer["type"] == protocol.INPUT_CHECKS_EVENT
        event = protocol.InputChecksEvent.from_dict({k: answer[k] for k in ("report", "request_id")})
        assert event.report.verdict == "fail" and [c.frames for c in event.report.checks if c.name == "cut"] == [[5]]
        missing = _ask(proc, "c2", dict(job, driving=str(tmp_path / "nothing.mp4")))
        assert missing["type"] == "error" and missing["code"] == "bad_input" and "not found" in missing["message"]
        clean = _ask(proc, "c3", protocol.JobSpec(driving=str(FOOTAGE / "scail_001_driving.mp4"), frame_end=20,
                                                  reference=str(FOOTAGE / "scail_001_ref.jpg")).to_dict())
        assert protocol.InputCheckReport.from_dict(clean["report"]).verdict == "ok"
    finally:
        proc.stdin.close()
        assert proc.wait(timeout=60) == 0
