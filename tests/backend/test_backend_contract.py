"""The contract in use on the backend's side: what a real job writes reads back as its records, the
rules written once hold (a raised pixel limit resumes), damage is one line, and "your input" versus
"our failure" is decided the same way by the command line and the worker."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
from scail_fixtures import FOOTAGE, REPO

import protocol
from backend import cli

DRIVING = FOOTAGE / "scail_001_driving.mp4"
REFERENCE = FOOTAGE / "scail_001_ref.jpg"
JOB_ARGS = ["--driving", str(DRIVING), "--reference", str(REFERENCE), "--device", "cpu",
            "--height", "64", "--width", "128", "--steps", "2", "--end", "5", "--seed", "4"]


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished 5-frame job of the tiny model; tests copy it."""
    out = tmp_path_factory.mktemp("finished") / "job"
    assert cli.main(["generate", *JOB_ARGS, "--model", "tiny", "--out", str(out)]) == 0
    return out


def run_cli(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", *args], cwd=REPO, capture_output=True, text=True,
                          timeout=300)


def test_what_a_job_writes_reads_back_as_its_records_field_for_field(finished):
    raw_manifest = json.loads((finished / protocol.MANIFEST_NAME).read_text())
    manifest = protocol.read_record(finished / protocol.MANIFEST_NAME, protocol.Manifest)
    assert manifest.to_dict() == raw_manifest  # every field written is one the record knows, and no more
    assert manifest.status == "done" and len(manifest.frames) == 5 and manifest.seed == 4
    raw_state = json.loads((finished / protocol.STATE_NAME).read_text())
    assert protocol.read_record(finished / protocol.STATE_NAME, protocol.JobState).to_dict() == raw_state
    with pytest.raises(protocol.ProtocolError, match="unknown field surprise"):
        protocol.Manifest.from_dict(raw_manifest | {"surprise": 1})


def test_a_rerun_with_a_raised_pixel_limit_resumes_the_job(finished, tmp_path):
    job = Path(shutil.copytree(finished, tmp_path / "job"))
    last = job / "frames" / "frame_000004.png"
    kept = last.read_bytes()
    last.unlink()
    raised = str(protocol.DEFAULT_MAX_INPUT_PIXELS * 4)
    assert cli.main(["generate", *JOB_ARGS, "--model", "tiny", "--out", str(job), "--max-input-pixels", raised]) == 0
    assert last.read_bytes() == kept  # the same job, resumed: its missing frame made again, identically


def test_binary_garbage_in_a_finished_jobs_state_is_one_line_from_the_command_line(finished, tmp_path):
    job = Path(shutil.copytree(finished, tmp_path / "job"))
    (job / protocol.STATE_NAME).write_bytes(b"\xff\xfe\x00\x81garbage\x00" * 8)
    run = run_cli("generate", *JOB_ARGS, "--model", "tiny", "--out", str(job))
    assert run.returncode == 2, run.stderr
    assert run.stderr.splitlines() == [run.stderr.strip()] and "Traceback" not in run.stderr, run.stderr
    assert "state.json is damaged" in run.stderr and "not UTF-8" in run.stderr, run.stderr


def test_a_corrupt_checkpoint_is_the_users_input_for_the_command_line_and_the_worker_alike(tmp_path):
    weights = tmp_path / "weights"
    weights.mkdir()
    (weights / "scail2.safetensors").write_bytes(b"\x13\x37" * 4000)  # a header length no file has

    run = run_cli("generate", *JOB_ARGS, "--weights", str(weights), "--out", str(tmp_path / "cli"))
    assert run.returncode == 2 and run.stderr.startswith("error: ") and "Traceback" not in run.stderr, run.stderr

    worker = subprocess.Popen([sys.executable, "-m", "backend", "serve", "--weights", str(weights), "--device", "cpu",
                               "--jobs-root", str(tmp_path / "jobs")], cwd=REPO, stdin=subprocess.PIPE,
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True)
    try:
        spec = protocol.JobSpec(driving=str(DRIVING), reference=str(REFERENCE), height=64, width=128, steps=2,
                                frame_end=5, seed=4)
        worker.stdin.write(protocol.encode_message("submit", job=spec.to_dict(), job_dir=str(tmp_path / "w")))
        worker.stdin.flush()
        for line in worker.stdout:
            event = protocol.decode_event(protocol.decode_message(line))
            if isinstance(event, protocol.ErrorEvent):
                break
    finally:
        worker.kill()
        worker.wait()
    assert event.code == protocol.errors.BAD_INPUT == "bad_input", event
    assert protocol.errors.is_input_error(event.code)
    # The same words as the command line's one line.
    assert event.message in run.stderr, (event.message, run.stderr)
