"""What following a job costs Blender: timer ticks, redraw passes and the timer's own time per tick.

    BLENDER_USER_RESOURCES=$(mktemp -d) .venvs/blender/bin/python bench/timer_overhead.py [--steps 40]

Runs in the bpy module with this checkout enabled as the extension, a real tiny worker (CPU) and one
interactive job (the timer followed as Blender's event loop would: each tick when it asks to be
called). Reports ticks and redraw passes per minute and the time a tick takes, so the timer's cost can
be compared with Blender idling (no ticks at all). Redraw passes are counted, not redraws: the bpy
module has no windows.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOOTAGE = os.path.join(REPO, "tests", "fixtures", "footage")
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from addon_overhead import load_addon  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--steps", type=int, default=40, help="denoising steps of the job (its length)")
    args = parser.parse_args()

    import bpy

    addon = load_addon()
    follow, session = addon.runtime.follow, addon.runtime.session
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    prefs.python_path = os.path.join(REPO, ".venvs", "backend", "bin", "python")
    prefs.model_source, prefs.device = 'TINY', 'CPU'
    prefs.output_dir = tempfile.mkdtemp(prefix="scail2-timer-")

    scene = bpy.context.scene
    if bpy.app.version >= (5, 0, 0):  # the sequencer shows the workspace's sequencer scene
        bpy.context.window_manager.windows[0].workspace.sequencer_scene = scene
    scene.sequence_editor_create()
    strip = scene.sequence_editor.strips.new_movie(
        "driving", os.path.join(FOOTAGE, "scail_001_driving.mp4"), 1, 1, fit_method='FIT')
    scene.sequence_editor.active_strip = strip
    src, job_settings = scene.scail2_sources, scene.scail2_job
    src.driving_source, src.mask_source, src.reference_source = 'STRIP', 'NONE', 'FILE'
    src.reference_file = os.path.join(FOOTAGE, "scail_001_ref.jpg")
    job_settings.width, job_settings.height = 128, 64
    job_settings.use_custom_sampling = True  # first: turning it on starts the values at the preset's
    job_settings.steps = args.steps
    job_settings.use_frame_range, job_settings.frame_start, job_settings.frame_end = True, 1, 8

    passes = []
    redraw = follow.redraw_job_panels
    follow.redraw_job_panels = lambda preview=False: (passes.append(preview), redraw(preview))
    session.force_async = True
    try:
        assert bpy.ops.scail2.generate() == {'FINISHED'}
        while addon.runtime.input_render.active() is not None:  # the inputs first (bench/input_render.py)
            addon.runtime.input_render._tick()
        while not session.scene_jobs(scene):  # the worker checks the inputs, then the job is queued
            follow.tick()
            time.sleep(0.05)
        job = session.scene_jobs(scene)[-1]
        tick_times, started = [], time.monotonic()
        while not job.finished:
            before = time.perf_counter()
            interval = follow.tick()
            tick_times.append(time.perf_counter() - before)
            time.sleep(interval if interval is not None else 0.25)
        minutes = (time.monotonic() - started) / 60.0
    finally:
        follow.redraw_job_panels = redraw
        session.force_async = False
        follow.shutdown()
    print(json.dumps({
        "job": job.status, "seconds": round(minutes * 60.0, 1),
        "ticks_per_minute": round(len(tick_times) / minutes, 1),
        "redraw_passes_per_minute": round(len(passes) / minutes, 1),
        "tick_ms_median": round(1000 * statistics.median(tick_times), 3),
        "tick_ms_max": round(1000 * max(tick_times), 3),
    }, indent=1))


if __name__ == "__main__":
    main()
