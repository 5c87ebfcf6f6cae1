"""Child-process script for runtime/test_remote_generation.py: the installed extension driving a remote worker.

Run as ``python remote_script.py ZIP WORK_DIR REPORT_JSON`` with ``BLENDER_USER_RESOURCES`` set.
WORK_DIR/config.json names the backend Python, the footage, the reference and the worker (address,
token, the fingerprint it printed). Steps: install, accept the worker's certificate once (Show
Certificate, Trust This Certificate), Generate on a movie strip, the strip it imports, and the worker's list
of jobs the Queue panel asks for.
"""

import json
import os
import sys
import time

ZIP_PATH, WORK_DIR, REPORT_PATH = sys.argv[1:4]

import bpy  # noqa: E402  (after the environment is set)
from script_common import (  # noqa: E402
    PKG, LayoutStub, draw_preferences_of, install_tiny, module, report, show, step)

with open(os.path.join(WORK_DIR, "config.json"), encoding="utf-8") as fh:
    CONFIG = json.load(fh)


@step
def install():
    prefs = install_tiny(ZIP_PATH, CONFIG["backend_python"], os.path.join(WORK_DIR, "output"))
    prefs.worker_location = 'REMOTE'
    prefs.remote_address = CONFIG["address"]
    prefs.remote_token = CONFIG["token"]
    return sorted(op for op in dir(bpy.ops.scail2))


@step
def offline_no_worker_elsewhere_is_reached():
    """Blender starts offline (the bpy module too): a worker on another machine is refused in one line by each
    way in, before any connection; the one on this machine (127.0.0.1, the rest of this script) needs no
    online access."""
    prefs = bpy.context.preferences.addons[PKG].preferences
    assert not bpy.app.online_access
    prefs.remote_address = "192.0.2.10:7860"  # a documentation address: never reachable
    lines = {}
    try:  # an operator reporting an error raises in a background Blender
        bpy.ops.scail2.show_worker_certificate()
        raise AssertionError("Show Certificate ran with online access off")
    except RuntimeError as ex:
        lines["show_certificate"] = str(ex)
    session = module(".runtime.session")
    try:
        session.get_queue()
        raise AssertionError("a queue was made for a worker elsewhere with online access off")
    except session.GenerateError as ex:
        lines["queue"] = str(ex)
    lines["drawn"] = [text for kind, text, _icon, _args in draw_preferences_of(prefs, bpy.context) if kind == "label"]
    lines["note"] = prefs.remote_certificate_note
    prefs.remote_address = CONFIG["address"]
    assert session.remote_refusal(*module(".core.job").parse_address(CONFIG["address"])) is None
    return lines


@step
def accept_certificate_once():
    prefs = bpy.context.preferences.addons[PKG].preferences
    assert bpy.ops.scail2.show_worker_certificate() == {'FINISHED'}
    remote = module(".operators.remote")
    deadline = time.monotonic() + 60
    while remote.land_certificate() is not None:  # the timer, as Blender's event loop would call it
        assert time.monotonic() < deadline, "the certificate never came"
        time.sleep(0.1)
    seen = prefs.remote_seen_fingerprint
    assert bpy.ops.scail2.trust_worker_certificate() == {'FINISHED'}
    return {"seen": seen, "pinned": prefs.remote_fingerprint, "note": prefs.remote_certificate_note}


@step
def generate():
    scene = bpy.data.scenes.new("Remote")
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.render.resolution_x, scene.render.resolution_y = 128, 64
    scene.frame_start, scene.frame_end = 1, 65
    scene.sequence_editor_create()
    strip = scene.sequence_editor.strips.new_movie("driving", CONFIG["footage"], 2, 1, fit_method='FIT')
    scene.sequence_editor.active_strip = strip
    src = scene.scail2_sources
    src.driving_source, src.mask_source, src.reference_source = 'STRIP', 'NONE', 'FILE'
    src.reference_file = CONFIG["reference"]
    job = scene.scail2_job
    job.width, job.height = 128, 64
    job.use_custom_sampling = True  # first: turning it on starts the values at the preset's
    job.steps = 2
    job.use_frame_range = True
    job.frame_start, job.frame_end = 1, 8
    show(scene)
    result = bpy.ops.scail2.generate()
    assert result == {'FINISHED'}, result
    editor = scene.sequence_editor
    strips = [s for s in editor.strips_all if "scail2" in s]
    assert len(strips) == 1, [s.name for s in strips]
    done = module(".runtime.session").scene_jobs(scene)[-1]
    directory = bpy.path.abspath(strips[0].directory)
    return {"directory": directory, "elements": [e.filename for e in strips[0].elements],
            "files": sorted(os.listdir(directory)), "status": done.status, "job_dir": done.job_dir,
            "transfer": list(done.transfer), "manifest": done.manifest}


def _drawn_queue_panel():
    """The Queue panel's real ``draw`` against `LayoutStub` (every call checked against Blender's own RNA)."""
    log = []

    class Proxy:
        layout = LayoutStub(log)

    bpy.types.SCAIL2_PT_sequencer_queue.draw(Proxy(), bpy.context)
    return [[name, text, icon, list(first)] for name, text, icon, first in log if name in ("label", "operator")]


@step
def list_worker_jobs():
    """The Queue panel's list of the worker's jobs, asked for as its refresh button does."""
    assert bpy.ops.scail2.list_worker_jobs() == {'FINISHED'}
    queue = module(".runtime.session").get_queue(create=False)
    deadline = time.monotonic() + 60
    while queue.listing_worker_jobs:  # the timer's polls, as Blender's event loop would make them
        assert time.monotonic() < deadline, "no list came"
        queue.poll(timeout=0.1)
    listed = list(queue.worker_jobs)
    panel = {"listed": _drawn_queue_panel()}
    # As an admin's list shows another artist's queued job: its row, and a cancel button that takes its id.
    queue.worker_jobs = [{"job": "0f0e0d0c0b0a", "job_dir": "/jobs/take_00/", "owner": "ben", "status": "running",
                          "progress": {"phase": "sample", "segment": 1, "segments": 2, "step": 14, "steps": 40}},
                         {"job": "1a2b3c4d5e6f", "job_dir": "/jobs/take_01/", "owner": "alice", "status": "queued",
                          "position": 2}]
    panel["another_artists"] = _drawn_queue_panel()
    queue.worker_jobs = listed
    return {"jobs": listed, "panel": panel}


@step
def close():
    module(".runtime.session").close_queue()


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1, default=str)
