"""Running SCAIL-2 jobs from Blender: the built extension, a real worker (tiny model, CPU), real bpy.

One child Python (``generate_script.py``) installs the built extension with
isolated user folders, points it at the backend environment and runs jobs on
scenes built in code around the fixture clip (65 frames at 16 fps): a movie
strip in a 24 fps scene and one added as in the interface in a 30 fps scene.
The worker is shared by every step (one per Blender session, as for an
artist). A second child opens the saved file and generates again, as a render
farm does with ``blender -b shot.blend --python-expr "bpy.ops.scail2.generate()"``.
Marked ``lts``: also runs on Blender 4.5.
"""

import json
import math
import os
import re
import shlex

import pytest

import blender_testing

pytestmark = [
    pytest.mark.lts,
    pytest.mark.slow,
    pytest.mark.skipif(os.name == "nt", reason="POSIX paths of the backend environment"),
]

FOOTAGE, REFERENCE, BACKEND_PYTHON = blender_testing.FOOTAGE, blender_testing.REFERENCE, blender_testing.BACKEND_PYTHON
OOM_PROMPT = "simulate running out of memory"


def run_child(built_zip, work, user_dir, mode):
    # The worker inherits SCAIL2_TEST_FAIL_OOM: this prompt fails like a full GPU.
    return blender_testing.run_child_script(
        "generate_script.py", [built_zip, work, work / "report-{:s}.json".format(mode), mode], work, user_dir,
        extra_env={"SCAIL2_TEST_FAIL_OOM": OOM_PROMPT})


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    if not os.path.exists(BACKEND_PYTHON):  # the fixtures are checked for the session (tests/conftest.py)
        pytest.skip("not found: " + BACKEND_PYTHON)
    work = tmp_path_factory.mktemp("generate")
    (work / "blender-user").mkdir()
    # The backend Python, with tests/fault_hooks' sitecustomize (the worker inherits SCAIL2_TEST_FAIL_OOM).
    python = work / "python-with-faults"
    python.write_text('#!/bin/sh\nPYTHONPATH={:s} exec {:s} "$@"\n'.format(
        shlex.quote(os.path.join(blender_testing.REPO_ROOT, "tests", "fault_hooks")), shlex.quote(BACKEND_PYTHON)))
    python.chmod(0o755)
    config = {"backend_python": str(python), "footage": FOOTAGE, "reference": REFERENCE,
              "oom_prompt": OOM_PROMPT, "farm_blend": str(work / "farm.blend")}
    (work / "config.json").write_text(json.dumps(config))
    return work


@pytest.fixture(scope="module")
def report(built_zip, work):
    return run_child(built_zip, work, work / "blender-user", "main")


@pytest.fixture(scope="module")
def farm_report(built_zip, work, report):
    step(report, "save_for_the_farm")
    return run_child(built_zip, work, work / "blender-user", "farm")


def step(report, name):
    assert name in report, "step {!r} did not run\n{:s}".format(name, report["_output"])
    result = report[name]
    assert result["ok"], "step {!r} failed:\n{:s}\n{:s}".format(name, result["detail"], report["_output"])
    return result["detail"]


def manifest(path):
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def check_strip_shows_the_manifest(detail):
    """The image strip lists only the job's frames, each one of the manifest's, in time order."""
    strip, history = detail["strip"], detail["history"]
    data = manifest(history["manifest"])
    files = [os.path.basename(frame["file"]) for frame in data["frames"]]
    assert data["status"] == "done"
    assert os.path.realpath(strip["directory"]) == os.path.realpath(os.path.join(history["job_dir"], "frames"))
    assert strip["elements"], strip
    assert set(strip["elements"]) <= set(files)
    assert strip["elements"] == sorted(strip["elements"])
    assert set(files) == set(strip["elements"]), "every generated frame is shown"
    for name in files:
        assert os.path.isfile(os.path.join(history["job_dir"], "frames", name))
    assert strip["props"]["manifest"] == history["manifest"]
    return data


def test_operators_are_registered(report):
    ops = step(report, "install")
    assert {"generate", "cancel_job", "history_import", "history_redo", "setup_backend", "check_weights",
            "export_all_inputs", "stop_worker"} <= set(ops)


def test_background_generate_imports_the_strip_24fps(report):
    detail = step(report, "generate_24fps")
    data = check_strip_shows_the_manifest(detail)
    # Scene frames 1-8 of a strip added from Python show footage frames 0-7, one per scene frame.
    assert len(data["frames"]) == 8
    assert [f["source_frame"] for f in data["frames"]] == list(range(8))
    assert data["job"]["frame_start"] == 0 and data["job"]["frame_end"] == 8
    assert data["job"]["driving"] == FOOTAGE and data["job"]["reference"] == REFERENCE
    assert (data["size"], data["job"]["steps"]) == ([64, 128], 2)
    strip = detail["strip"]
    assert (strip["frame_final_start"], strip["frame_final_end"]) == (1, 9)
    assert strip["channel"] > detail["driving"]["channel"]
    history = detail["history"]
    assert history["status"] == "IMPORTED" and history["frames"] == 8
    assert history["seed"] == data["seed"] == data["job"]["seed"]  # unlocked: a new seed, recorded
    assert history["settings"]["spec"]["seed"] == data["seed"]
    assert history["settings"]["import"]["driving_strip"] == "driving"
    assert history["thumbnail"].endswith("frame_000000.png") and os.path.isfile(history["thumbnail"])
    assert history["job_id"] == os.path.basename(history["job_dir"])
    # The job read the strip's movie directly (no export render).
    assert detail["inputs"]["driving"]["kind"] == "movie"
    # An unsaved file's inputs folder is its own: another session's "Shot24" does not share it.
    assert re.fullmatch(r"untitled-\d+-[0-9a-f]+_Shot24", os.path.basename(detail["inputs_folder"]))


def test_background_generate_30fps_ui_strip(report):
    detail = step(report, "generate_30fps_ui_strip")
    data = check_strip_shows_the_manifest(detail)
    # Added in the interface, the clip plays in real time: scene frame f shows footage (f - 1) * 16 / 30,
    # truncated by 5.0 and rounded by 4.5 (compat.movie_position_rounding).
    assert detail["driving"]["frame_duration"] == 121
    version = tuple(int(v) for v in report["blender_version"].split()[0].split(".")[:2])
    last = 11 * 16 / 30
    last = math.floor(last) if version >= (5, 0) else math.floor(last + 0.5)
    assert [f["source_frame"] for f in data["frames"]] == list(range(last + 1))
    assert detail["strip"]["frame_final_start"] == 1 and detail["strip"]["frame_final_end"] >= 13
    assert detail["history"]["seed"] == data["seed"] == 1234  # locked


def test_missing_reference_is_one_line_and_changes_nothing(report):
    detail = step(report, "missing_reference")
    message = detail["message"]
    assert "no-such-reference.png" in message and "not found" in message
    assert "Traceback" not in message
    assert detail["after"] == detail["before"]


def test_inputs_whose_source_changed_are_exported_again(report):
    detail = step(report, "changed_sources_are_exported_again")
    first, unchanged, changed = detail["first"], detail["unchanged"], detail["changed"]
    # Nothing changed: nothing is exported again.
    assert unchanged["inputs_mtime"] == first["inputs_mtime"]
    assert unchanged["reference"] == first["reference"] and unchanged["scene_frame_start"] == 1
    # A new reference file and a moved strip: both exported again before the job.
    assert changed["reference"] == detail["other"] != first["reference"]
    assert changed["scene_frame_start"] == 3
    assert changed["frame_end"] - changed["frame_start"] < first["frame_end"] - first["frame_start"]


def test_a_killed_workers_job_is_named_so_and_resumes_in_its_folder(report):
    detail = step(report, "resume_after_the_worker_was_killed")
    failed = detail["failed"]
    assert failed["status"] == "failed" and "signal 9" in failed["message"]
    assert "loaded" not in failed["message"] + failed["hint"]  # not the worker's last output line
    assert failed["resume_offered"]
    assert detail["resumed"] == {"status": "done", "same_folder": True, "history": 1, "strips": 1}
    assert detail["automatic"] == {"status": "done", "same_folder": True, "history": 2}


def test_an_output_folder_that_cannot_be_written_is_one_line(report):
    detail = step(report, "output_folder_not_writable")
    for message in (detail["generate"], detail["export"]):
        assert "not-a-folder" in message and "Not a directory" in message, message
        assert "Traceback" not in message, message
    assert detail["after"] == detail["before"]


def test_the_frame_limit_starts_at_the_scenes_range(report):
    detail = step(report, "frame_limit_starts_at_scene_range")
    assert detail == {"first": [10, 40], "kept": [12, 20]}


def test_sequencer_output_without_strips_is_one_line(report):
    detail = step(report, "sequencer_output_without_strips")
    for message in (detail["generate"], detail["export"]):
        assert "The sequencer has no strips" in message, message
        assert "Traceback" not in message and "ops.py" not in message, message


def test_reference_gone_from_disk_is_refused_by_the_worker(report):
    detail = step(report, "reference_missing_on_disk")
    assert "reference image not found" in detail["message"] and "gone.jpg" in detail["message"]
    assert "Traceback" not in detail["message"]
    assert detail["after"] == detail["before"]


def test_worker_error_reports_message_and_hint_and_changes_nothing(report):
    detail = step(report, "worker_error")
    assert detail["error"]["code"] == "out_of_memory"
    assert "out of memory" in detail["error"]["message"].lower()
    assert detail["error"]["hint"] == "lower the resolution, use fp8 storage or group offload"
    assert detail["error"]["hint"] in detail["message"]
    assert "Traceback" not in detail["message"]
    assert detail["after"] == detail["before"]


def test_interactive_generate_returns_at_once_and_the_timer_imports(report):
    detail = step(report, "interactive_generate")
    # Returned before the worker had it: the inputs are being checked, or the job is being submitted.
    assert detail["status_at_return"] in ("checking", "submitting", "queued"), detail
    assert detail["status"] == "done"
    assert detail["ticks"] > 1
    assert detail["phases"]  # progress was seen between ticks
    assert detail["status_lines"] and all(line.startswith("SCAIL-2: ") for line in detail["status_lines"])
    assert detail["timer_after"] is None  # idle: the timer stops
    assert detail["preview"] == detail["last_frame"] and detail["preview"].endswith(".png")
    # The shot's second take takes the first one's place (one channel per shot), the first stays in the history.
    assert detail["strips_after"] == detail["strips_before"]
    assert detail["history"] == 2


def test_inputs_render_from_a_timer_with_progress_and_cancel(report):
    detail = step(report, "inputs_render_from_a_timer")
    # Generate no longer renders 12 frames before returning: the job waits for its inputs, rendered from a timer.
    assert detail["queued_at_once"] == 0, detail
    assert "operator:scail2.cancel_input_render" in detail["panel"]
    assert detail["temporary_during"] == ["SCAIL2 export (ShotCamera)"]
    assert detail["after_cancel"] == {"result": ["FINISHED"], "active": False, "temporary_scenes": [], "queued": 0,
                                      "driving_recorded": False}
    # A few frames per tick, counted up, then the reference; then the job runs and is imported.
    driving = [text for text in detail["shown"] if text.startswith("Rendering the driving footage")]
    assert len(driving) >= 3 and driving[-1].endswith("/12"), detail["shown"]
    assert "Rendering the driving footage 0/0" not in driving
    assert detail["status"] == "done" and detail["history"] == 1 and detail["strips"] == 1


def test_cancel_leaves_the_scene_and_keeps_the_job_folder(report):
    detail = step(report, "cancel_running_job")
    assert detail["status"] == "cancelled"
    assert detail["took"] < 30
    assert detail["after"] == detail["before"]
    assert os.path.isdir(detail["job_dir"])
    state = manifest(os.path.join(detail["job_dir"], "state.json"))
    assert state["status"] == "cancelled"
    # Cancelled during the first segment's steps: no frame was made, and the message does not claim any.
    assert detail["outcome"] == ["WARNING", "The job was cancelled before its first frame; nothing was imported"]


def test_panels_draw(report):
    drawn = step(report, "panels_draw")
    for space in ("sequencer", "view3d"):
        assert "SCAIL2_PT_{:s}_generate".format(space) in drawn
        history = drawn["SCAIL2_PT_{:s}_history".format(space)]
        assert any(text.startswith("Job ") for text in history), history
        queue = drawn["SCAIL2_PT_{:s}_queue".format(space)]
        assert any("Done" in text for text in queue), queue
        assert any("Cancelled" in text for text in queue), queue
        # The active strip is an imported result: the Inputs name the footage Generate will export.
        inputs = drawn["SCAIL2_PT_{:s}_inputs".format(space)]
        assert "driving (footage of the active strip)" in inputs, inputs
        assert "No mask: the whole frame is character 1" in " ".join(inputs), inputs  # wrapped to the width


def test_history_survives_save_and_reload(report):
    detail = step(report, "history_survives_save_and_reload")
    assert detail["loaded"] == detail["saved"]
    assert len(detail["loaded"]) == 2


def test_import_again(report):
    detail = step(report, "import_again")
    assert detail["after"] == detail["before"] + 1
    assert detail["newest"]["elements"]


def test_redo_uses_the_same_settings_and_seed(report):
    detail = step(report, "redo_same_settings")
    first, again = detail["first"], detail["again"]
    assert detail["history"] == 2
    assert again["job_dir"] != first["job_dir"]
    assert again["seed"] == first["seed"] == 1234
    assert again["settings"]["spec"] == first["settings"]["spec"]
    first_frames = manifest(first["manifest"])["frames"]
    again_frames = manifest(again["manifest"])["frames"]
    assert [f["source_time"] for f in again_frames] == [f["source_time"] for f in first_frames]


def test_disabling_stops_the_worker_and_the_timer(report):
    detail = step(report, "disable_stops_the_worker")
    assert detail["pid"] is not None
    assert detail["alive"] is False
    assert detail["timers"] == []
    assert detail["scail2_types"] == []


def test_render_farm_run_of_a_saved_file(farm_report):
    detail = step(farm_report, "farm_generate")
    check_strip_shows_the_manifest(detail)
    assert detail["scene"] == "Shot24"
    assert detail["history"]["status"] == "IMPORTED"
    # A new inputs folder for the saved file: the driving footage was exported from the driving
    # strip, not from the result strip the previous import left active.
    assert manifest(detail["history"]["manifest"])["job"]["driving"] == FOOTAGE
