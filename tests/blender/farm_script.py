"""Child-process script for runtime/test_farm.py: Send to Farm, a real farm run, then Import Again.

Run as ``python farm_script.py ZIP WORK_DIR REPORT_JSON`` with ``BLENDER_USER_RESOURCES`` pointing
at an empty folder. WORK_DIR/config.json names the backend Python, the openjd command, the footage
and the reference. Installs the built extension (tiny model, CPU), sends a 24 fps shot to the farm,
runs the bundle's OpenJD step with ``openjd run`` (the farm, locally) and imports the frames from the
history entry. Steps are recorded in REPORT_JSON as ``{name: {"ok": bool, "detail": ...}}``.
"""

import json
import os
import subprocess
import sys
import time

ZIP_PATH, WORK_DIR, REPORT_PATH = sys.argv[1:4]

import bpy  # noqa: E402  (after the environment is set)
from script_common import draw_panels, install_tiny, module, report, show, step  # noqa: E402

with open(os.path.join(WORK_DIR, "config.json"), encoding="utf-8") as fh:
    CONFIG = json.load(fh)
STATE = {}


def imported_strips(scene):
    return [s for s in scene.sequence_editor.strips_all if "scail2" in s]


@step
def install():
    install_tiny(ZIP_PATH, CONFIG["backend_python"], os.path.join(WORK_DIR, "output"))
    return sorted(op for op in dir(bpy.ops.scail2))


@step
def send_to_farm():
    scene = bpy.data.scenes.new("Shot24")
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.render.resolution_x, scene.render.resolution_y = 64, 32
    scene.sequence_editor_create()
    strip = scene.sequence_editor.strips.new_movie("driving", CONFIG["footage"], 2, 1, fit_method='FIT')
    scene.sequence_editor.active_strip = strip
    src = scene.scail2_sources
    src.driving_source, src.mask_source, src.reference_source = 'STRIP', 'NONE', 'FILE'
    src.reference_file = CONFIG["reference"]
    job = scene.scail2_job
    job.width, job.height = 64, 32
    job.use_custom_sampling = True  # first: turning it on starts the values at the preset's
    job.steps = 1
    job.use_frame_range, job.frame_start, job.frame_end = True, 1, 4
    job.use_seed_lock, job.seed = True, 99
    show(scene)
    STATE["scene"] = scene
    result = bpy.ops.scail2.send_to_farm(directory=os.path.join(WORK_DIR, "farm"))
    assert result == {'FINISHED'}, result
    item = job.history[-1]
    with open(json.loads(item.settings_json)["farm"]["openjd"], encoding="utf-8") as fh:
        steps = [s["name"] for s in json.load(fh)["steps"]]
    return {
        "steps": steps,
        "history": len(job.history),
        "item": {"job_id": item.job_id, "job_dir": item.job_dir, "manifest": item.manifest, "status": item.status,
                 "note": item.note, "seed": item.seed, "settings": json.loads(item.settings_json)},
        "strips": len(imported_strips(scene)),
        "generate_panel": draw_panels()["SCAIL2_PT_sequencer_generate"],
    }


@step
def a_farm_folder_that_is_a_file_is_one_line():
    scene = STATE["scene"]
    not_a_folder = os.path.join(WORK_DIR, "not-a-folder")
    with open(not_a_folder, "w", encoding="utf-8") as fh:
        fh.write("a file")
    before = len(scene.scail2_job.history)
    try:
        bpy.ops.scail2.send_to_farm(directory=not_a_folder)
    except RuntimeError as ex:
        return {"message": str(ex), "history": len(scene.scail2_job.history) - before}
    raise AssertionError("Send to Farm did not fail")


@step
def farm_runs_the_bundle():
    """What the farm does, locally: ``openjd run`` of the bundle's step, the template's own defaults."""
    item = STATE["scene"].scail2_job.history[-1]
    farm = json.loads(item.settings_json)["farm"]
    run = subprocess.run([CONFIG["openjd"], "run", farm["openjd"], "--step", item.job_id], cwd=WORK_DIR,
                         capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    with open(item.manifest, encoding="utf-8") as fh:
        return {"manifest": json.load(fh)}


@step
def import_from_the_history():
    scene = STATE["scene"]
    before = len(imported_strips(scene))
    result = bpy.ops.scail2.history_import(index=len(scene.scail2_job.history) - 1)
    assert result == {'FINISHED'}, result
    strips = imported_strips(scene)
    new = strips[-1]
    item = scene.scail2_job.history[-1]
    return {
        "before": before,
        "after": len(strips),
        "strip": {"frame_final_start": new.frame_final_start, "frame_final_end": new.frame_final_end,
                  "directory": bpy.path.abspath(new.directory), "elements": [e.filename for e in new.elements],
                  "channel": new.channel, "manifest": new["scail2"].to_dict().get("manifest")},
        "driving_channel": scene.sequence_editor.strips["driving"].channel,
        "status": item.status,
        "note": item.note,
        "frames": item.frames,
        "thumbnail": bpy.path.abspath(item.thumbnail),
    }


@step
def interactive_send_returns_at_once():
    """With a timer (as in the interface): the operator returns before the bundle exists; the timer adds the entry."""
    scene = STATE["scene"]
    session, farm = module(".runtime.session"), module(".runtime.farm")
    session.force_async = True
    try:
        before = len(scene.scail2_job.history)
        started = time.monotonic()
        result = bpy.ops.scail2.send_to_farm(directory=os.path.join(WORK_DIR, "farm"))
        returned_after = time.monotonic() - started
        at_return = len(scene.scail2_job.history)
        timer_registered = bpy.app.timers.is_registered(farm._poll)
        polls = 0
        while farm._poll() is not None:  # as Blender's event loop calls it
            polls += 1
            assert time.monotonic() - started < 120, "timed out"
            time.sleep(0.05)
    finally:
        session.force_async = False
    item = scene.scail2_job.history[-1]
    with open(os.path.join(WORK_DIR, "farm", "template.json"), encoding="utf-8") as fh:
        steps = [s["name"] for s in json.load(fh)["steps"]]
    return {"result": sorted(result), "returned_after": returned_after, "before": before, "at_return": at_return,
            "after": len(scene.scail2_job.history), "timer": timer_registered, "polls": polls,
            "job_dir": item.job_dir, "job_id": item.job_id, "steps": steps}


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1)
