"""Which folder takes a generation job, the lock a run holds on it, and what a killed run leaves.

No model here: real folders, and real processes that hold (or held) a folder's lock.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap

import pytest
from scail_fixtures import REPO

import protocol
from backend.pipeline.job_folder import (
    generated_files,
    LOCK_NAME,
    FolderClaim,
    JobDirectoryError,
    OutputError,
    check_folder,
    folder_state,
)

JOB = protocol.JobSpec(driving="clip.mp4", reference="still.png", seed=3).to_dict()


def job_folder(path, job=JOB, status="running", **state):
    """A folder as a generation leaves it: manifest, state, frames."""
    (path / "frames").mkdir(parents=True)
    (path / "manifest.json").write_text(json.dumps({"job": job, "seed": 3, "status": status}))
    (path / "state.json").write_text(json.dumps({"status": status, "completed_segments": 0, "seed": 3} | state))
    (path / "frames" / "frame_000000.png").write_bytes(b"png")
    return path


def holder(folder, then: str = "sleep") -> subprocess.Popen:
    """Another process that claims `folder` and then sleeps (or is killed by the test)."""
    code = textwrap.dedent(f"""
        import sys, time
        from backend.pipeline.job_folder import FolderClaim
        FolderClaim({str(folder)!r}).claim()
        print("claimed", flush=True)
        time.sleep(60)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "claimed"
    return process


def test_a_folder_takes_a_job_when_new_empty_or_holding_that_job(tmp_path):
    assert check_folder(tmp_path / "new", JOB) is None
    (tmp_path / "empty").mkdir()
    assert check_folder(tmp_path / "empty", JOB) is None
    state = check_folder(job_folder(tmp_path / "mine", completed_segments=1), JOB)
    assert state["completed_segments"] == 1


@pytest.mark.parametrize("case, message", [
    ("file", "is a file, not a folder"),
    ("foreign", "is not empty and holds no SCAIL-2 job"),
    ("foreign frames", "is not empty and holds no SCAIL-2 job"),
    ("other job", "holds a different job"),
    ("truncated manifest", "manifest.json is damaged (not JSON"),
    ("truncated state", "state.json is damaged (not JSON"),
    ("seed beyond 64 bits", "holds the seed 1180591620717411303424, which is not 0 to 2**64 - 1"),
])
def test_a_folder_that_cannot_take_the_job_is_refused_in_one_line_and_left_as_it_was(tmp_path, case, message):
    folder = tmp_path / "out"
    if case == "file":
        folder.write_text("mine")
    elif case == "foreign":
        folder.mkdir()
        (folder / "notes.txt").write_text("mine")
    elif case == "foreign frames":
        (folder / "frames").mkdir(parents=True)
        (folder / "frames" / "frame_000000.png").write_text("mine")
    elif case == "other job":
        job_folder(folder, job=JOB | {"prompt": "another"})
    elif case == "truncated manifest":
        job_folder(folder)
        (folder / "manifest.json").write_text('{"job": {"driv')
    elif case == "truncated state":
        job_folder(folder)
        (folder / "state.json").write_text('{"status": "runn')
    elif case == "seed beyond 64 bits":
        job_folder(folder, seed=2**70)
    before = {p: p.read_bytes() for p in [folder, *folder.rglob("*")] if p.is_file()}
    with pytest.raises(JobDirectoryError) as raised:
        check_folder(folder, JOB)
    assert message in str(raised.value) and "\n" not in str(raised.value)
    assert {p: p.read_bytes() for p in [folder, *folder.rglob("*")] if p.is_file()} == before


def test_a_second_live_run_is_refused_with_its_pid(tmp_path):
    folder = job_folder(tmp_path / "job")
    other = holder(folder)
    try:
        with pytest.raises(JobDirectoryError, match=rf"being written by another run \(PID {other.pid}\)"):
            FolderClaim(folder).claim()
        assert folder_state(folder) == "running"
    finally:
        other.kill()
        other.wait()


def test_a_killed_runs_lock_is_taken_over_its_job_reported_interrupted_and_its_temp_files_removed(tmp_path):
    folder = job_folder(tmp_path / "job")
    other = holder(folder)
    os.kill(other.pid, signal.SIGKILL)
    other.wait()
    assert (folder / LOCK_NAME).read_text().split() == [str(other.pid)]
    assert folder_state(folder) == "interrupted"
    leftovers = [folder / "frames" / ".frame_000001.png.0a1b2c3d.tmp", folder / ".state.json.deadbeef.tmp",
                 folder / ".preview.mp4.01234567.mp4"]
    kept = [folder / "frames" / ".frame_000001.png.mine.tmp", folder / ".notes.0a1b2c3d.tmp",
            folder / "frames" / "frame_000000.png"]
    for path in leftovers + kept:
        path.write_bytes(b"x")
    with FolderClaim(folder) as claim:
        assert claim.interrupted and claim.removed_temp_files == 3
        assert (folder / LOCK_NAME).read_text().split() == [str(os.getpid())]
        assert folder_state(folder) == "running"
    assert not any(p.exists() for p in leftovers) and all(p.exists() for p in kept)
    assert not (folder / LOCK_NAME).exists()


def test_a_claim_that_made_the_folder_removes_it_when_nothing_was_written(tmp_path):
    with FolderClaim(tmp_path / "a" / "b"):
        assert (tmp_path / "a" / "b").is_dir()
    assert not (tmp_path / "a").exists()


def test_an_unwritable_place_is_an_output_error(tmp_path):
    (tmp_path / "file").write_text("x")
    with pytest.raises(OutputError, match="output folder .*file/job cannot be made: .*file is a file, not a folder"):
        FolderClaim(tmp_path / "file" / "job").claim()


def test_generated_files_names_what_a_generation_wrote_and_everything_else_apart(tmp_path):
    job = tmp_path / "job"
    written = ["manifest.json", "state.json", "preview.mp4", "review.json", ".scail2-job.lock",
               ".state.json.0123abcd.tmp", "frames/frame_000000.png", "frames/.frame_000001.png.89abcdef.tmp",
               "history/segment_000002.safetensors"]
    foreign = ["notes.txt", "frames/frame_1.png", "frames/extra", "history/tail.pt", "mattes", "shots"]
    for name in written + ["notes.txt", "frames/frame_1.png", "history/tail.pt", "mattes/frame_000000.png"]:
        (job / name).parent.mkdir(parents=True, exist_ok=True)
        (job / name).write_bytes(b"x")
    (job / "frames" / "extra").mkdir()
    (job / "shots").symlink_to(tmp_path)
    ours, others = generated_files(job)
    assert sorted(str(p.relative_to(job)) for p in ours) == sorted(written)
    assert others == sorted(foreign)
    assert generated_files(tmp_path / "missing") == ([], [])
