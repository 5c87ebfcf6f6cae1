"""Child-process script for runtime/test_input_checks_in_blender.py: Check Inputs, its markers and Generate Anyway in real bpy.

Run as ``python checks_script.py ZIP WORK_DIR REPORT_JSON`` with ``BLENDER_USER_RESOURCES`` set. WORK_DIR/config.json
names the backend Python, a movie with a hard cut at footage frame 8 (16 fps) and a reference still. The
interactive path is driven as in generate_script.py: ``runtime.session.force_async`` set and the timer
functions called by hand.
"""

import json
import os
import sys

ZIP_PATH, WORK_DIR, REPORT_PATH = sys.argv[1:4]

import bpy  # noqa: E402  (after the environment is set)
from script_common import draw_panels, install_tiny, module, pump, render_inputs, report, show, step  # noqa: E402

with open(os.path.join(WORK_DIR, "config.json"), encoding="utf-8") as fh:
    CONFIG = json.load(fh)

STATE = {}


def check_markers(scene):
    return sorted((m.name, m.frame) for m in scene.timeline_markers if m.name.startswith("check: "))


def new_shot():
    scene = bpy.data.scenes.new("Cut")
    scene.render.fps, scene.render.fps_base = 16, 1.0
    scene.render.resolution_x, scene.render.resolution_y = 128, 64
    scene.frame_start, scene.frame_end = 1, 16
    scene.sequence_editor_create()
    strip = scene.sequence_editor.strips.new_movie("cut", CONFIG["movie"], 2, 1, fit_method='FIT')
    scene.sequence_editor.active_strip = strip
    src = scene.scail2_sources
    src.driving_source, src.mask_source, src.reference_source = 'STRIP', 'NONE', 'FILE'
    src.reference_file = CONFIG["reference"]
    job = scene.scail2_job
    job.width, job.height = 128, 64
    job.use_custom_sampling = True
    job.steps = 1
    scene.timeline_markers.new("my own marker", frame=3)
    show(scene)
    return scene


@step
def install():
    install_tiny(ZIP_PATH, CONFIG["backend_python"], os.path.join(WORK_DIR, "output"))
    return [op for op in ("check_inputs", "clear_check_markers", "generate_anyway") if hasattr(bpy.ops.scail2, op)]


@step
def check_inputs_button():
    session = module(".runtime.session")
    session.force_async = True
    try:
        scene = STATE["scene"] = new_shot()
        result = bpy.ops.scail2.check_inputs()
        render_inputs()  # the exports, from the timer, then the request
        src = scene.scail2_sources
        state_while_checking = src.input_checks_state
        pump(lambda: bool(src.input_checks))
        report_data = json.loads(src.input_checks)
        panels = draw_panels()
        return {
            "result": sorted(result), "state_while_checking": state_while_checking,
            "state_after": src.input_checks_state,
            "verdicts": {c["name"]: c["verdict"] for c in report_data["checks"]},
            "cut_frames": [c["frames"] for c in report_data["checks"] if c["name"] == "cut"],
            "markers": check_markers(scene), "all_markers": sorted(m.name for m in scene.timeline_markers),
            "panel": [call for call in panels["SCAIL2_PT_sequencer_inputs"]
                      if call.startswith(("label:", "operator:"))],
            "jobs": len(session.get_queue(create=False).jobs),
        }
    finally:
        session.force_async = False


@step
def clear_markers():
    scene = STATE["scene"]
    result = bpy.ops.scail2.clear_check_markers()
    return {"result": sorted(result), "markers": check_markers(scene),
            "kept": sorted(m.name for m in scene.timeline_markers)}


@step
def generate_asks_then_generate_anyway():
    session, checks = module(".runtime.session"), module(".runtime.input_checks")
    session.force_async = True
    try:
        scene = STATE["scene"]
        queue = session.get_queue(create=False)
        jobs_before = len(queue.jobs)
        result = bpy.ops.scail2.generate(export='NONE')
        pump(lambda: not any(run.pending for run in queue.checks.values()))
        held = checks.peek_held(scene)
        jobs_after_check = len(queue.jobs)
        anyway = bpy.ops.scail2.generate_anyway(scene=scene.name)
        job = session.scene_jobs(scene)[-1]
        pump(lambda: job.finished, timeout=300)
        item = scene.scail2_job.history[-1]
        with open(item.manifest, encoding="utf-8") as fh:
            manifest = json.load(fh)
        try:
            again = sorted(bpy.ops.scail2.generate_anyway(scene=scene.name))
        except RuntimeError as ex:  # an operator's ERROR report
            again = str(ex).strip()
        return {
            "result": sorted(result), "asked": list(queue.checks.values())[-1].meta.get("asked"),
            "held": held[1] if held else None, "jobs_before": jobs_before,
            "jobs_after_check": jobs_after_check, "anyway": sorted(anyway), "status": job.status,
            "ui": json.loads(item.settings_json)["ui"].get("input_checks"),
            "manifest_checks": [c["name"] for c in manifest["input_checks"]["checks"] if c["verdict"] == "fail"],
            "markers": check_markers(scene), "again": again,
        }
    finally:
        session.force_async = False


@step
def background_generate_checks_then_runs():
    """`blender -b shot.blend --python-expr "bpy.ops.scail2.generate()"`: nobody to ask; the job runs, its
    manifest keeping the failed checks."""
    scene = STATE["scene"]
    before = len(scene.scail2_job.history)
    result = bpy.ops.scail2.generate(export='NONE')
    item = scene.scail2_job.history[-1]
    with open(item.manifest, encoding="utf-8") as fh:
        manifest = json.load(fh)
    return {"result": sorted(result), "new_entries": len(scene.scail2_job.history) - before,
            "verdict": max((c["verdict"] for c in manifest["input_checks"]["checks"]),
                           key=("ok", "warn", "fail").index)}


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1)
