"""Install the built extension into an isolated Blender, enable it, use it, disable it.

One child Python (``install_script.py``) does all the Blender work, since ``bpy``
must be imported after ``BLENDER_USER_RESOURCES`` points at a temporary folder;
the tests below read its report. Marked ``lts``: also runs on Blender 4.5.
"""

import json
import os
import subprocess
import sys

import pytest

import blender_testing

pytestmark = [
    pytest.mark.lts,
    pytest.mark.slow,
    pytest.mark.skipif(os.name == "nt", reason="the fake backend Python is a POSIX shell script"),
]

EXPECTED_CLASSES = [
    "SCAIL2_AddonPreferences",
    "SCAIL2_ExtraView",
    "SCAIL2_ExtraViews",
    "SCAIL2_FH_import_result",
    "SCAIL2_IdentityAssignment",
    "SCAIL2_JobHistoryItem",
    "SCAIL2_OT_add_extra_view",
    "SCAIL2_OT_add_extra_view_files",
    "SCAIL2_OT_apply_segmentation",
    "SCAIL2_OT_assign_identity",
    "SCAIL2_OT_auto_masks",
    "SCAIL2_OT_auto_reference_mask",
    "SCAIL2_OT_cancel_get_weights",
    "SCAIL2_OT_cancel_input_render",
    "SCAIL2_OT_cancel_job",
    "SCAIL2_OT_cancel_setup_backend",
    "SCAIL2_OT_cancel_worker_job",
    "SCAIL2_OT_check_backend",
    "SCAIL2_OT_check_identities",
    "SCAIL2_OT_check_inputs",
    "SCAIL2_OT_check_weights",
    "SCAIL2_OT_clear_check_markers",
    "SCAIL2_OT_compare",
    "SCAIL2_OT_compare_end",
    "SCAIL2_OT_compare_toggle",
    "SCAIL2_OT_export_all_inputs",
    "SCAIL2_OT_export_driving",
    "SCAIL2_OT_export_extra_views",
    "SCAIL2_OT_export_masks",
    "SCAIL2_OT_export_reference",
    "SCAIL2_OT_export_review",
    "SCAIL2_OT_generate",
    "SCAIL2_OT_generate_anyway",
    "SCAIL2_OT_get_weights",
    "SCAIL2_OT_history_import",
    "SCAIL2_OT_history_redo",
    "SCAIL2_OT_history_remove",
    "SCAIL2_OT_import_result",
    "SCAIL2_OT_job_report",
    "SCAIL2_OT_list_worker_jobs",
    "SCAIL2_OT_matte_result",
    "SCAIL2_OT_move_extra_view",
    "SCAIL2_OT_open_output_folder",
    "SCAIL2_OT_preview_mask",
    "SCAIL2_OT_refine_masks",
    "SCAIL2_OT_remove_extra_view",
    "SCAIL2_OT_remove_identity",
    "SCAIL2_OT_render_turnaround",
    "SCAIL2_OT_resume_job",
    "SCAIL2_OT_send_to_farm",
    "SCAIL2_OT_setup_backend",
    "SCAIL2_OT_show_weights_plan",
    "SCAIL2_OT_show_worker_certificate",
    "SCAIL2_OT_stop_worker",
    "SCAIL2_OT_take_add_note",
    "SCAIL2_OT_take_approve",
    "SCAIL2_OT_take_jump_flag",
    "SCAIL2_OT_take_refresh",
    "SCAIL2_OT_take_show_notes",
    "SCAIL2_OT_take_use_settings",
    "SCAIL2_OT_trust_worker_certificate",
    "SCAIL2_OT_wedge",
    "SCAIL2_PT_sequencer_extra_views",
    "SCAIL2_PT_sequencer_generate",
    "SCAIL2_PT_sequencer_history",
    "SCAIL2_PT_sequencer_inputs",
    "SCAIL2_PT_sequencer_queue",
    "SCAIL2_PT_sequencer_review",
    "SCAIL2_PT_sequencer_setup",
    "SCAIL2_PT_sequencer_wedge",
    "SCAIL2_PT_view3d_extra_views",
    "SCAIL2_PT_view3d_generate",
    "SCAIL2_PT_view3d_history",
    "SCAIL2_PT_view3d_inputs",
    "SCAIL2_PT_view3d_queue",
    "SCAIL2_PT_view3d_review",
    "SCAIL2_PT_view3d_setup",
    "SCAIL2_PT_view3d_wedge",
    "SCAIL2_SceneJob",
    "SCAIL2_SceneSources",
    "SCAIL2_TakeNote",
    "SCAIL2_UL_extra_views",
    "SCAIL2_UL_history",
    "SCAIL2_UL_identities",
]


@pytest.fixture(scope="module")
def report(built_zip, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("install")
    user_dir = tmp / "blender-user"
    user_dir.mkdir()
    fake_python = str(tmp / "fake-python")
    blender_testing.write_executable(fake_python, (
        '#!/bin/sh\n'
        'printf "%s\\n" "$*" > "$0.calls"\n'
        'pwd >> "$0.calls"\n'
        'echo "scail2-backend 0.0.0-fake"\n'
    ))
    report_path = tmp / "report.json"
    proc = subprocess.run(
        [
            sys.executable,
            os.path.join(blender_testing.HERE, "install_script.py"),
            built_zip, fake_python, str(report_path),
        ],
        env=blender_testing.isolated_blender_env(str(user_dir)),
        cwd=str(tmp),
        capture_output=True, text=True, timeout=300,
    )
    output = "exit code {:d}\n--- stdout\n{:s}\n--- stderr\n{:s}".format(
        proc.returncode, proc.stdout[-4000:], proc.stderr[-4000:],
    )
    assert report_path.is_file(), output
    with open(report_path, encoding="utf-8") as fh:
        data = json.load(fh)
    data["_output"] = output
    data["_user_dir"] = str(user_dir)
    return data


def step(report, name):
    assert name in report, "step {!r} did not run\n{:s}".format(name, report["_output"])
    result = report[name]
    assert result["ok"], "step {!r} failed:\n{:s}".format(name, result["detail"])
    return result["detail"]


def test_installs_and_enables(report):
    installed = step(report, "install")
    assert installed.startswith(report["_user_dir"])


def test_registers_its_classes(report):
    registered = step(report, "registered")
    assert registered["classes"] == EXPECTED_CLASSES
    # Operators, panels, lists and file handlers show up in bpy.types under their class names.
    assert registered["types"] == [name for name in EXPECTED_CLASSES if "_OT_" in name or "_PT_" in name
                                   or "_UL_" in name or "_FH_" in name]


def test_panels_in_both_sidebars(report):
    assert step(report, "panels") == {
        "SCAIL2_PT_sequencer_setup": ["SEQUENCE_EDITOR", "UI", "SCAIL"],
        "SCAIL2_PT_view3d_setup": ["VIEW_3D", "UI", "SCAIL"],
    }


def test_preferences(report):
    prefs = step(report, "preferences_defaults")
    assert prefs["python_path"] == prefs["weights_dir"] == prefs["output_dir"] == ""
    assert prefs["devices"] == ["CUDA", "CPU"]
    assert prefs["memory_modes"] == ["FULL_BF16", "FP8_STORAGE", "FP8_COMPUTE", "GROUP_OFFLOAD"]
    # A fresh install's Device follows the machine (issue 30): CPU where there is no NVIDIA driver.
    assert prefs["device"] == ("CUDA" if step(report, "first_run_hints")["nvidia_smi"] else "CPU")
    assert prefs["memory_mode"] == "FP8_STORAGE" and prefs["compile_model"] is False
    # What the worker is started with (the backend's options of the same names)
    assert prefs["gpu_args"] == {
        "FULL_BF16 compile=False": ["--storage", "bf16"], "FULL_BF16 compile=True": ["--storage", "bf16", "--compile"],
        "FP8_STORAGE compile=False": ["--storage", "fp8"], "FP8_STORAGE compile=True": ["--storage", "fp8", "--compile"],
        "FP8_COMPUTE compile=False": ["--compute", "fp8"], "FP8_COMPUTE compile=True": ["--compute", "fp8", "--compile"],
        "GROUP_OFFLOAD compile=False": ["--offload", "group"],
        "GROUP_OFFLOAD compile=True": ["--offload", "group", "--compile"],
    }
    # Send to Farm: `farm bundle` takes --storage and --offload itself, the rest in its --extra line
    assert prefs["farm_args"] == ["--offload", "group", "--extra", "--compute fp8 --compile"]
    step(report, "output_dir_setting")


def test_data_dir_under_extension_user_dir(report):
    path = step(report, "data_dir")
    assert path.startswith(os.path.join(report["_user_dir"], "extensions", ".user"))


def test_check_backend_needs_a_python(report):
    step(report, "check_backend_poll_without_python")


def test_check_backend_runs_backend_in_addon_dir(report):
    message = step(report, "check_backend_ok")
    assert message == "Backend ready: scail2-backend 0.0.0-fake"


def test_check_backend_reports_missing_python(report):
    detail = step(report, "check_backend_missing")
    assert len(detail["error"].strip().splitlines()) == 1, detail["error"]
    assert any(text.startswith("Not found: ") for text in detail["panel"]), detail["panel"]


def test_panels_and_preferences_draw(report):
    texts = step(report, "draw_after_check")
    assert "Backend ready: scail2-backend 0.0.0-fake" in texts["view3d"]
    assert "Not set" in texts["view3d"]  # weights
    assert any(t and t.startswith("Default: ") for t in texts["preferences"])


def test_sequencer_panel_names_the_sequencer_scene(report):
    # Blender 5.0+ takes the workspace's sequencer scene (none in background mode),
    # 4.5 the context's scene.
    detail = step(report, "draw_sequencer_real_context")
    if tuple(map(int, report["blender_version"].split()[0].split(".")[:2])) >= (5, 0):
        assert detail == {"scene": None, "texts": ["Scene", "None: pick a sequencer scene"]}
    else:
        assert detail == {"scene": "Scene", "texts": ["Scene", "Scene"]}


def test_disable_leaves_nothing_behind(report):
    checked_functions = step(report, "disable")
    assert checked_functions > 5


def test_enables_again_and_reloads_changed_code(report):
    step(report, "reenable_and_disable")


def test_job_panels_and_preferences_draw_with_real_layout_calls(report):
    drawn = step(report, "draw_job_panels")
    for name in ("inputs", "generate", "queue", "history"):
        # The sequencer and 3D viewport panels draw the same content.
        assert drawn["SCAIL2_PT_sequencer_" + name] == drawn["SCAIL2_PT_view3d_" + name], name
    assert "No jobs in this session" in drawn["SCAIL2_PT_view3d_queue"]
    assert "No finished jobs in this scene yet" in drawn["SCAIL2_PT_view3d_history"]
    assert "scail2.generate" in drawn["operators"] and "scail2.setup_backend" in drawn["operators"]


def test_generate_panel_shows_the_presets_values_and_the_output_size(report):
    shown = step(report, "preset_values")
    assert {"Preset (40)", "Preset (5.0)", "Preset (3.0)", "512 x 896, as the reference"} <= set(shown["quality 512p"])
    assert {"Preset (40)", "Preset (5.0)", "Preset (5.0)", "704 x 1280, as the reference"} <= set(shown["quality 704p"])
    assert "Preset (3.0)" not in shown["quality 704p"]
    assert {"Preset (8)", "Preset (1.0)", "256 x 128"} <= set(shown["fast 256x128"])
    # Override Preset starts from what the preset was using (quality at 256x128: short side 128 <= 512).
    assert shown["overridden"] == [40, 5.0, 3.0]


def test_fresh_preferences_say_what_is_missing_and_point_to_the_test_model(report):
    hints = step(report, "first_run_hints")
    weights_hint = "No weights folder yet: press Get Weights below, or pick Test Model to try the add-on"
    assert weights_hint in hints["fresh"]
    gpu_hint = "No NVIDIA GPU found here: use a remote worker, or the Test Model on the CPU"
    assert gpu_hint not in hints["fresh"]  # a fresh install here runs on what the machine has
    assert (gpu_hint in hints["cuda_chosen"]) == (not hints["nvidia_smi"])
    assert weights_hint not in hints["set_up"] and gpu_hint not in hints["set_up"]
