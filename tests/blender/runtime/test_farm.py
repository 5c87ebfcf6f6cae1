"""Send to Farm in real Blender: the bundle the backend writes, a real ``openjd run`` of it, then Import Again.

One child Python (``farm_script.py``) installs the built extension (tiny model, CPU), sends a 24 fps
shot over scene frames 1-4 to a farm folder, runs the bundle's OpenJD step locally as the farm would
(the template's defaults: tiny, CPU) and imports the frames from the history entry. The farm's frames
come in as a local Generate's would: a strip from scene frame 1, one footage frame per scene frame.
Marked ``lts``: also runs on Blender 4.5.
"""

import json
import os

import pytest

import blender_testing

pytestmark = [
    pytest.mark.lts,
    pytest.mark.slow,
    pytest.mark.skipif(os.name == "nt", reason="POSIX paths of the backend environment"),
]

OPENJD = os.path.join(os.path.dirname(blender_testing.BACKEND_PYTHON), "openjd")


@pytest.fixture(scope="module")
def report(built_zip, tmp_path_factory):
    for path in (blender_testing.BACKEND_PYTHON, OPENJD):  # the fixtures: checked for the session (tests/conftest.py)
        if not os.path.exists(path):
            pytest.skip("not found: " + path)
    work = tmp_path_factory.mktemp("farm")
    (work / "blender-user").mkdir()
    (work / "config.json").write_text(json.dumps({
        "backend_python": blender_testing.BACKEND_PYTHON, "openjd": OPENJD,
        "footage": blender_testing.FOOTAGE, "reference": blender_testing.REFERENCE}))
    return blender_testing.run_child_script("farm_script.py", [built_zip, work, work / "report.json"], work,
                                            work / "blender-user")


def step(report, name):
    assert name in report, "step {!r} did not run\n{:s}".format(name, report["_output"])
    result = report[name]
    assert result["ok"], "step {!r} failed:\n{:s}\n{:s}".format(name, result["detail"], report["_output"])
    return result["detail"]


def test_send_to_farm_writes_a_bundle_and_a_history_entry_for_its_job_folder(report):
    assert "send_to_farm" in step(report, "install")
    detail = step(report, "send_to_farm")
    item = detail["item"]
    assert detail["history"] == 1 and detail["strips"] == 0  # nothing imported yet
    assert "operator:scail2.send_to_farm" in detail["generate_panel"]
    farm = item["settings"]["farm"]
    bundle = farm["bundle"]
    assert os.path.dirname(bundle) == farm["farm_dir"] and os.path.basename(bundle) == item["job_id"]
    assert item["job_dir"] == os.path.join(bundle, "output")
    assert item["manifest"] == os.path.join(bundle, "output", "manifest.json")
    assert item["status"] == "DONE" and "render farm" in item["note"]
    # The bundle asks for the job Generate would have run: its spec, with bundle-relative inputs.
    spec = item["settings"]["spec"]
    with open(os.path.join(bundle, "job.json"), encoding="utf-8") as fh:
        bundled = json.load(fh)
    assert bundled == dict(spec, driving="inputs/driving/scail_001_driving.mp4",
                           reference="inputs/reference/scail_001_ref.jpg")
    assert (spec["frame_start"], spec["frame_end"], spec["seed"], item["seed"]) == (0, 4, 99, 99)
    assert spec["steps"] == 1  # the panel's override, not the preset's 40
    assert item["settings"]["import"]["driving_strip"] == "driving"
    assert item["settings"]["import"]["frame_start"] == 1
    assert detail["steps"] == [item["job_id"]]  # one step: this shot


def test_the_farms_frames_are_imported_like_a_local_jobs(report):
    manifest = step(report, "farm_runs_the_bundle")["manifest"]
    assert manifest["status"] == "done" and manifest["seed"] == 99
    assert [f["source_frame"] for f in manifest["frames"]] == [0, 1, 2, 3]
    detail = step(report, "import_from_the_history")
    item = step(report, "send_to_farm")["item"]
    strip = detail["strip"]
    assert detail["after"] == detail["before"] + 1
    # Scene frames 1-4 show footage frames 0-3: the strip starts at 1, one generated frame per scene frame.
    assert (strip["frame_final_start"], strip["frame_final_end"]) == (1, 5)
    assert strip["elements"] == [os.path.basename(f["file"]) for f in manifest["frames"]]
    assert os.path.realpath(strip["directory"]) == os.path.realpath(os.path.join(item["job_dir"], "frames"))
    assert strip["manifest"] == item["manifest"]
    assert strip["channel"] > detail["driving_channel"]
    assert (detail["status"], detail["note"]) == ("IMPORTED", "")
    # The entry was made before the frames existed: the import fills in their count and the thumbnail.
    assert detail["frames"] == 4
    assert detail["thumbnail"] == os.path.join(item["job_dir"], manifest["frames"][0]["file"])


def test_interactively_the_bundle_is_written_while_a_timer_waits(report):
    detail = step(report, "interactive_send_returns_at_once")
    first = step(report, "send_to_farm")["item"]
    assert detail["result"] == ["FINISHED"] and detail["timer"]
    assert detail["at_return"] == detail["before"] and detail["after"] == detail["before"] + 1
    assert detail["polls"] >= 1
    # Sent to the same farm folder: a second bundle, and one farm job with a step per shot.
    assert detail["job_id"] != first["job_id"] and os.path.isdir(detail["job_dir"])
    assert sorted(detail["steps"]) == sorted([first["job_id"], detail["job_id"]])


def test_a_bundle_that_cannot_be_written_is_one_line_and_adds_no_entry(report):
    detail = step(report, "a_farm_folder_that_is_a_file_is_one_line")
    assert detail["history"] == 0
    message = detail["message"]
    assert "Could not write the farm bundle: " in message and "not-a-folder" in message, message
    assert "Traceback" not in message and len(message.strip().splitlines()) == 1, message
