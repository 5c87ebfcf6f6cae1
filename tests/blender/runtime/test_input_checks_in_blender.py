"""Check Inputs in real bpy with the built extension and a real worker (tiny model, CPU): the button, the
checklist in the panel, the markers and their one-click removal, and Generate asking once (Generate Anyway)."""

import json
import os
import subprocess

import pytest

import blender_testing

pytestmark = [pytest.mark.slow, pytest.mark.skipif(os.name == "nt", reason="POSIX paths of the backend environment")]

FIXTURES = os.path.dirname(blender_testing.FOOTAGE)
MAKE_CUT = """
import sys, cv2
out, a, b = sys.argv[1:4]
frames = []
for path in (a, b):
    cap = cv2.VideoCapture(path)
    for _ in range(8):
        ok, frame = cap.read()
        frames.append(cv2.resize(frame, (256, 144)))
writer = cv2.VideoWriter(out, cv2.VideoWriter_fourcc(*"mp4v"), 16.0, (256, 144))
for frame in frames:
    writer.write(frame)
writer.release()
"""


@pytest.fixture(scope="module")
def report(built_zip, tmp_path_factory):
    if not os.path.exists(blender_testing.BACKEND_PYTHON):
        pytest.skip("no backend environment")
    work = tmp_path_factory.mktemp("checks")
    (work / "blender-user").mkdir()
    movie = work / "cut.mp4"
    subprocess.run([blender_testing.BACKEND_PYTHON, "-c", MAKE_CUT, str(movie),
                    os.path.join(FIXTURES, "scail_001_driving.mp4"), os.path.join(FIXTURES, "scail_002_driving.mp4")],
                   check=True, timeout=120)
    config = {"backend_python": blender_testing.BACKEND_PYTHON, "movie": str(movie),
              "reference": blender_testing.REFERENCE}
    (work / "config.json").write_text(json.dumps(config))
    return blender_testing.run_child_script("checks_script.py", [built_zip, work, work / "report.json"], work,
                                            work / "blender-user")


def step(report, name):
    assert name in report, "step {!r} did not run\n{:s}".format(name, report["_output"])
    assert report[name]["ok"], "step {!r} failed:\n{:s}\n{:s}".format(name, report[name]["detail"], report["_output"])
    return report[name]["detail"]


def test_the_operators_are_registered(report):
    assert step(report, "install") == ["check_inputs", "clear_check_markers", "generate_anyway"]


def test_check_inputs_runs_in_the_worker_and_marks_the_cut(report):
    detail = step(report, "check_inputs_button")
    assert detail["result"] == ["FINISHED"] and detail["state_while_checking"].startswith("Checking")
    assert detail["state_after"] == "" and detail["verdicts"]["cut"] == "fail" and detail["cut_frames"] == [[8]]
    # Footage frame 8 of a strip starting at scene frame 1 in a scene of the footage's rate: scene frame 9.
    assert ["check: cut", 9] in detail["markers"]
    assert "my own marker" in detail["all_markers"] and detail["jobs"] == 0  # nothing was generated
    panel = detail["panel"]
    assert "operator:scail2.check_inputs" in panel and "operator:scail2.clear_check_markers" in panel
    assert any(call.startswith("label:") and "A shot cut at frame 8" in call for call in panel)
    assert not any("Read from the movie directly" in call and "CHECK" in call for call in panel)


def test_clear_markers_removes_only_the_checks(report):
    detail = step(report, "clear_markers")
    assert detail["result"] == ["FINISHED"] and detail["markers"] == [] and detail["kept"] == ["my own marker"]


def test_generate_asks_once_and_generate_anyway_keeps_the_warning_with_the_take(report):
    detail = step(report, "generate_asks_then_generate_anyway")
    assert detail["result"] == ["FINISHED"] and detail["held"].startswith("Input checks failed (cut")
    assert detail["jobs_after_check"] == detail["jobs_before"]  # held: nothing queued before the artist says so
    assert detail["anyway"] == ["FINISHED"] and detail["status"] == "done"
    assert detail["ui"].startswith("fail, generated anyway") and "cut" in detail["manifest_checks"]
    # Asked once: the held job is gone (a UI-less Blender keeps it held instead of putting the question).
    assert detail["asked"] is False and ["check: cut", 9] in detail["markers"]
    assert detail["again"] == "Error: No job is waiting for Generate Anyway"


def test_background_generate_runs_and_records_the_checks(report):
    detail = step(report, "background_generate_checks_then_runs")
    assert detail == {"result": ["FINISHED"], "new_entries": 1, "verdict": "fail"}
