"""The input checks as the add-on follows them: a check_inputs request through the session's queue to a real
worker, the checklist rows and the markers' scene frames through an export's frame mapping. No bpy."""

import os
import time

import pytest

import blender_testing
from scail2 import protocol
from scail2.core import input_checks
from scail2.core import job as jobs
from scail2.core import queue as job_queue
from scail2.core.inputs import ExportedClip

REPO = blender_testing.REPO_ROOT
BACKEND_PYTHON = os.path.join(REPO, ".venvs", "backend", "bin", "python")
FOOTAGE = os.path.dirname(blender_testing.FOOTAGE)


def report(*checks, source_frames=range(10)):
    return protocol.InputCheckReport(checks=[protocol.InputCheck(**c) for c in checks],
                                     source_frames=list(source_frames))


def test_markers_land_on_the_scene_frames_of_each_run_start():
    # Footage frames 10..19 exported, shown on scene frames 101, 102, 104, 105... (a 16 fps clip in a 24 fps scene).
    clip = ExportedClip(path="d.mp4", kind="movie", fps=16.0, frame_start=10, frame_end=20, frame_count=30,
                        scene_frames=[101, 102, 104, 105, 107, 108, 110, 111, 113, 114], scene_frame_start=101,
                        shown=[], scene_fps=24.0)
    checks = report({"name": "cut", "verdict": "fail", "message": "a cut", "frames": [4]},
                    {"name": "blur", "verdict": "warn", "message": "soft", "frames": [1, 2, 3, 7]},
                    {"name": "camera", "verdict": "ok", "message": "steady", "frames": [5]},
                    source_frames=range(10, 20))
    assert input_checks.marker_frames(checks, clip) == [("check: cut", 107), ("check: blur", 102),
                                                        ("check: blur", 111)]


def test_rows_and_the_failed_summary():
    checks = report({"name": "subject_size", "verdict": "fail", "message": "too small", "value": 0.12,
                     "unit": "of the frame height", "frames": [0], "identity": 1},
                    {"name": "length", "verdict": "ok", "message": "10 frames", "value": 10.0})
    assert input_checks.checklist_rows(checks) == [('CANCEL', "0.12 of the frame height: too small"),
                                                   ('CHECKMARK', "10 frames")]
    assert input_checks.failed_summary(checks) == "Input checks failed (subject_size): too small"
    assert input_checks.failed_summary(report()) == ""


@pytest.mark.slow
@pytest.mark.skipif(not os.path.exists(BACKEND_PYTHON), reason="no backend environment")
def test_a_check_request_through_the_queue(tmp_path):
    worker = jobs.LocalWorker(BACKEND_PYTHON, ("--model", "tiny", "--device", "cpu"), cwd=REPO)
    queue = job_queue.JobQueue(worker, str(tmp_path))
    try:
        spec = protocol.JobSpec(driving=os.path.join(FOOTAGE, "scail_001_driving.mp4"), frame_end=20,
                                reference=os.path.join(FOOTAGE, "scail_001_ref.jpg"))
        run = queue.check_inputs(spec, meta={"scene": "Shot"})
        missing = queue.check_inputs(protocol.JobSpec(driving=str(tmp_path / "none.mp4"), reference=spec.reference))
        assert queue.busy
        changes = []
        deadline = time.monotonic() + 120
        while run.pending or missing.pending:
            assert time.monotonic() < deadline, queue.notice
            changes += queue.poll(timeout=0.05)
        assert run.status == "done" and run.report.verdict == "ok" and len(run.report.source_frames) == 20
        assert missing.status == "failed" and "not found" in missing.error
        assert {(c.job.key, c.kind) for c in changes} >= {(run.key, "checked"), (missing.key, "checked")}
        assert not queue.busy and not queue.jobs  # no job was queued
    finally:
        queue.shutdown(timeout=30)
