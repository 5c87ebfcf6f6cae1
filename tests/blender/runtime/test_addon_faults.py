"""The add-on as a careful new user finds it (issue 30, items 13-19), in real Blender with the built extension.

One child Python (``addon_faults_script.py``) installs the extension with isolated user folders and no
``nvidia-smi`` on PATH, and drives the setup, the imports, History and the panels; these tests read its report.
``tests/blender52/run.py``'s own failure line is tested here too, against a chroot whose mount fails.
"""

import importlib.util
import json
import os
import shutil
import subprocess
import sys

import pytest

import blender_testing
from blender_testing import step_detail as step

pytestmark = pytest.mark.lts

# Jobs as the backend writes them: the writer of the import tests (flat frames that encode their source frame).
_spec = importlib.util.spec_from_file_location(
    "result_import_jobs", os.path.join(blender_testing.HERE, "runtime", "test_result_import.py"))
_jobs = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(_jobs)

# What Debian's Blender Python answers to ``-m venv`` (no ensurepip), from a stand-in that records its arguments.
DISTRO_PYTHON = """#!/bin/sh
echo "$@" > "{log}"
echo "Error: Command '['/tmp/venv/bin/python3', '-m', 'ensurepip', '--upgrade', '--default-pip']' returned \
non-zero exit status 1."
echo "The virtual environment was not created successfully because ensurepip is not"
echo "available.  On Debian/Ubuntu systems, you need to install the python3-venv"
echo "package using the following command."
exit 1
"""
# What the sidebar's value column shows whole at its default width (the issue saw 34 characters and a cut).
SIDEBAR_CHARS = 30


def path_without_nvidia_smi():
    return os.pathsep.join(d for d in os.environ.get("PATH", "").split(os.pathsep)
                           if d and not os.path.exists(os.path.join(d, "nvidia-smi")))


def farm_bundle(work):
    """A real farm folder with one bundle no farm has run yet (``backend farm bundle``)."""
    spec = work / "spec.json"
    spec.write_text(json.dumps({"driving": blender_testing.FOOTAGE, "reference": blender_testing.REFERENCE,
                                "height": 64, "width": 128, "steps": 2, "seed": 3, "frame_end": 5}))
    proc = subprocess.run([blender_testing.BACKEND_PYTHON, "-m", "backend", "farm", "bundle", str(spec), "--name",
                           "shot", "--out", str(work / "farm"), "--model", "tiny", "--device", "cpu", "--json"],
                          cwd=blender_testing.REPO_ROOT, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    written = json.loads(proc.stdout.strip().splitlines()[-1])
    bundle = written["bundles"][0]
    return {"name": bundle["name"], "job_dir": bundle["job_dir"], "farm_dir": written["farm_dir"]}


@pytest.fixture(scope="module")
def report(built_zip, tmp_path_factory):
    work = tmp_path_factory.mktemp("faults")
    review = _jobs.make_job(str(work / "review"), range(8))
    (work / "review" / "review.json").write_text("{}")
    log = work / "distro-python.log"
    setup = {
        "backend_python": blender_testing.BACKEND_PYTHON,
        "distro_python": blender_testing.write_executable(str(work / "python3.14"), DISTRO_PYTHON.format(log=log)),
        "distro_python_log": str(log),
        "jobs": {"eight": _jobs.make_job(str(work / "eight"), range(8)),
                 "review": os.path.join(os.path.dirname(review), "review.json")},
        "farm": farm_bundle(work),
    }
    (work / "work.json").write_text(json.dumps(setup))
    user_dir = work / "blender-user"
    user_dir.mkdir()
    data = blender_testing.run_child_script("addon_faults_script.py", [built_zip, work, work / "report.json"], work,
                                            user_dir, extra_env={"PATH": path_without_nvidia_smi()})
    data["_setup"] = setup
    return data


# --- 13.

def test_set_up_backend_respects_online_access(report):
    detail = step(report, "setup_backend_offline")
    assert detail["online_access"] is False  # the bpy module starts offline, as Blender does until allowed
    assert "Allow Online Access" in detail["error"] and "Preferences > System > Network" in detail["error"]
    assert len(detail["error"].splitlines()) == 1
    assert detail["started"] is False  # nothing ran


def test_the_manifest_names_every_network_use():
    with open(os.path.join(blender_testing.REPO_ROOT, "blender_manifest.toml"), encoding="utf-8") as fh:
        network = [line for line in fh if line.startswith("network = ")]
    assert len(network) == 1
    for use in ("Remote worker", "Set Up Backend", "Get Weights"):
        assert use in network[0], network[0]


# --- 14.

def test_set_up_backend_uses_the_backend_python(report):
    detail = step(report, "setup_backend_with_the_backend_python")
    # The environment is made by the Backend Python the preferences name, not Blender's own.
    assert detail["argv"][:2] == ["-m", "venv"], detail["argv"]
    assert detail["status"] == "failed"
    assert "install python3-venv" in detail["message"] and "Backend Python" in detail["message"]


def error_block(labels, message):
    """The lines of the failure that starts with ``message``'s first words: an ERROR line and its BLANK1 lines."""
    start = next(i for i, (text, icon) in enumerate(labels) if icon == 'ERROR' and message.startswith(text))
    block = [labels[start][0]]
    for text, icon in labels[start + 1:]:
        if icon != 'BLANK1':
            break
        block.append(text)
    return block


def test_a_setup_failure_is_drawn_whole(report):
    detail = step(report, "setup_backend_with_the_backend_python")
    block = error_block(detail["failure_labels"], detail["message"])
    shown = " ".join(block)
    assert "sudo apt install python3-venv" in shown and "set Backend Python" in shown, block
    assert detail["message"] == shown  # every word, over as many lines as it needs
    assert all(len(text) <= 70 for text in block), block


def test_a_weights_check_failure_is_drawn_whole(report):
    detail = step(report, "setup_backend_with_the_backend_python")
    block = error_block(detail["doctor_labels"], detail["doctor_message"])
    assert detail["doctor_message"].startswith("Checking the weights failed: ")
    assert detail["doctor_message"] == " ".join(block) and len(block) > 1, block


def test_backend_ready_clears_the_failed_setup(report):
    detail = step(report, "setup_backend_with_the_backend_python")
    assert detail["checked"] == ["FINISHED"]
    assert detail["check"].startswith("Backend ready")
    assert detail["state_after_check"] is False
    assert not [text for text, icon in detail["labels_after_check"] if icon == 'ERROR']


# --- 15.

def test_defaults_follow_a_machine_without_an_nvidia_gpu(report):
    assert step(report, "install") == {"device": "CPU", "nvidia_smi": False}
    detail = step(report, "defaults_without_nvidia_gpu")
    assert "memory_mode" not in detail["props_drawn"]  # no "FP8 Storage" under CPU
    assert "Memory Mode: not used on the CPU" in detail["labels"]
    assert "memory_mode" in detail["props_drawn_cuda"]
    assert not any("No NVIDIA GPU" in text for text in detail["labels"])
    panel = detail["setup_panel"]
    weights = panel[panel.index("Weights") + 1]
    assert weights == "Not needed (Test Model)", panel


# --- 16.

def test_the_camera_plane_shows_nothing_outside_the_jobs_frames(report):
    detail = step(report, "plane_outside_the_jobs_frames")
    # 8 frames at 16 fps in a 24 fps scene from frame 1: scene frames 1-12 show them, no other frame anything.
    # (test_result_import renders it: before and after them the camera sees what is behind the plane.)
    assert detail["shown"] == {"0": 0.0, "1": 1.0, "6": 1.0, "12": 1.0, "13": 0.0, "100": 0.0, "190": 0.0}
    assert detail["surface_from"] == ["SCAIL2 Shown"]
    assert detail["selected"]  # imported at a frame it shows


# --- 17.

def test_import_result_is_in_both_add_menus(report):
    detail = step(report, "import_result_where_artists_look")
    # No file: the menus always open the file browser, whatever was imported last.
    assert detail["SEQUENCER_MT_add"] == [["scail2.import_result", "STRIP", ""]]
    assert detail["VIEW3D_MT_add"] == [["scail2.import_result", "PLANE", ""]]


def test_import_result_uses_import_helper_and_one_option_mixin(report):
    detail = step(report, "import_helper_and_shared_options")
    assert detail["import_helper"] and detail["mixin_in_operator"] and detail["mixin_in_scene"]
    assert detail["options"] == ["distance", "fill_mode", "form", "shading", "use_alpha"]
    assert detail["scene_has"] == detail["operator_has"] == detail["options"]


def test_history_imports_again_as_another_form(report):
    detail = step(report, "history_import_as")
    assert detail["menus"] == ["scail2.history_import:form"]
    assert detail["results"] == [["FINISHED"], ["FINISHED"]]
    assert (detail["planes"], detail["strips"]) == (1, 1)  # Import As Camera Plane, then as recorded (a strip)


def test_dropping_a_job_file_imports_its_result(report):
    detail = step(report, "drop_a_job_file")
    assert detail["operator"] == "scail2.import_result" and detail["extensions"] == ".json"
    assert detail["polls"] == {"VIEW_3D": True, "SEQUENCE_EDITOR": True, "PROPERTIES": False}
    # review.json on the 3D viewport: a camera plane; manifest.json on the sequencer: a strip.
    assert detail["made"]["VIEW_3D"] == {"result": ["FINISHED"], "planes": 1, "strips": 0}
    assert detail["made"]["SEQUENCE_EDITOR"] == {"result": ["FINISHED"], "planes": 1, "strips": 1}


# --- 18.

def test_import_again_on_an_unfinished_farm_job_says_how_far_it_is(report):
    detail = step(report, "farm_entry_not_finished")
    error = detail["errors"]["import"]
    assert "The farm has not finished shot" in error and "farm status: not started" in error, error
    assert "No job manifest" not in error


def test_matte_is_not_offered_on_an_entry_without_frames(report):
    detail = step(report, "farm_entry_not_finished")
    assert "scail2.matte_result" not in detail["operators"]
    assert "history_import" in " ".join(detail["operators"])
    assert "no frames to cut out" in detail["errors"]["matte"]


def test_a_job_cancelled_while_decoding_is_in_history(report):
    detail = step(report, "cancelled_while_decoding")
    assert detail["after_decode"] == [["cancelled while decoding", 77, 0,
                                       "cancelled while its frames were being written; none was kept"]]
    assert detail["after_sampling"] == 1  # one cancelled while sampling leaves the scene as it was
    assert detail["outcome"] == ["WARNING", "The job was cancelled before its first frame; nothing was imported"]
    assert "kept no frames: nothing to import (Redo runs it again)" in detail["import_again"]


# --- 19.

def test_sidebar_lines_fit_the_default_width(report):
    detail = step(report, "sidebar_lines")
    generate, history = detail["generate"], detail["history"]
    assert "896 x 512 or 512 x 896" in generate and "as the reference" in generate, generate
    assert "Job 20261206-101500-shot" in history and "81 frames, seed 2147483647" in history, history
    for text in generate + history:
        if " x " in text or "seed" in text:
            assert len(text) <= SIDEBAR_CHARS, text


def test_with_masks_none_the_progress_names_no_masks(report):
    detail = step(report, "masks_none_progress")
    assert detail["message"].startswith("Rendering the driving footage, reference for the job"), detail
    assert "masks" not in detail["message"] and "masks" not in detail["shown"]


def test_blender52_says_what_failed_when_the_chroot_cannot_be_entered(tmp_path):
    if os.geteuid() != 0 or not shutil.which("unshare"):
        pytest.skip("entering a chroot needs root and unshare")
    root = tmp_path / "chroot"
    (root / "usr" / "bin").mkdir(parents=True)
    blender_testing.write_executable(str(root / "usr" / "bin" / "blender"), "#!/bin/sh\necho Blender 5.2.2\n")
    # No /proc in it: mounting the chroot's /proc fails, as a failing bind mount does.
    env = {key: value for key, value in os.environ.items() if key != "BLENDER"}
    env.update(SCAIL2_CHROOT=str(root), PATH="/usr/bin:/bin")
    proc = subprocess.run([sys.executable, os.path.join(blender_testing.REPO_ROOT, "tests", "blender52", "run.py")],
                          env=env, capture_output=True, text=True, timeout=300)
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert "no Blender >= 4.5 found" not in proc.stdout
    assert "could not start its Blender" in proc.stdout and "mount" in proc.stdout, proc.stdout
