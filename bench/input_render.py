"""How long Blender is blocked while Generate renders a job's inputs from the 3D scene.

    BLENDER_USER_RESOURCES=$(mktemp -d) .venvs/blender/bin/python bench/input_render.py [--frames 65]

Runs in the bpy module with this checkout enabled as the extension. A scene with a camera and a moving
object is rendered as driving footage (Workbench, the default) over ``--frames`` frames, twice:

* in one go, as the Export buttons and background mode do (``sources.exports.export_missing``): Blender
  is blocked for all of it, as Generate blocked it before the inputs were rendered from a timer;
* from the timer (``runtime.input_render``), called as Blender's event loop would: Blender is blocked
  only while a tick runs, and handles events and redraws between ticks.

Reports the longest block of each, with the tick count and the total. No worker is started: the job
queued at the end is cancelled at once.
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


def camera_scene(bpy, frames: int, size: tuple[int, int]):
    """A scene rendered through a camera: a cube moving across the view over ``frames`` frames."""
    scene = bpy.data.scenes.new("InputRenderBench")
    scene.frame_start, scene.frame_end = 1, frames
    scene.render.resolution_x, scene.render.resolution_y = size
    camera = bpy.data.objects.new("BenchCamera", bpy.data.cameras.new("BenchCamera"))
    camera.location, camera.rotation_euler = (0.0, -10.0, 1.0), (1.5, 0.0, 0.0)
    scene.collection.objects.link(camera)
    scene.camera = camera
    mesh = bpy.data.meshes.new("BenchCube")
    mesh.from_pydata([(x, y, z) for x in (-1, 1) for y in (-1, 1) for z in (0, 2)], [],
                     [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)])
    cube = bpy.data.objects.new("BenchCube", mesh)
    scene.collection.objects.link(cube)
    for frame, x in ((1, -3.0), (frames, 3.0)):
        cube.location.x = x
        cube.keyframe_insert("location", index=0, frame=frame)
    return scene


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--frames", type=int, default=65, help="driving frames to render")
    parser.add_argument("--size", type=int, nargs=2, default=(1280, 720), metavar=("W", "H"),
                        help="the scene's resolution (the Inputs' Render Size caps it at 1280)")
    args = parser.parse_args()

    import bpy

    addon = load_addon()
    exports, input_render, session = addon.sources.exports, addon.runtime.input_render, addon.runtime.session
    prefs = bpy.context.preferences.addons[addon.__name__].preferences
    prefs.python_path = sys.executable  # never started: the queued job is cancelled before it reaches a worker
    prefs.output_dir = tempfile.mkdtemp(prefix="scail2-input-render-")

    scene = camera_scene(bpy, args.frames, tuple(args.size))
    bpy.context.window.scene = scene
    src = scene.scail2_sources
    src.driving_source, src.mask_source, src.reference_source = 'CAMERA', 'NONE', 'FILE'
    src.reference_file = os.path.join(FOOTAGE, "scail_001_ref.jpg")

    with bpy.context.temp_override(scene=scene):
        started = time.perf_counter()
        exports.export_missing(bpy.context, everything=True)
        in_one_go = time.perf_counter() - started

    session.force_async = True
    queued = []
    try:
        with bpy.context.temp_override(scene=scene):
            assert input_render.start(bpy.context, exports.exports_needed(bpy.context, True),
                                      then=lambda context: (queued.append(True), (None, 'INFO', "done"))[1])[1] == 'INFO'
        ticks, started = [], time.perf_counter()
        while input_render.active() is not None:
            before = time.perf_counter()
            input_render._tick()
            ticks.append(time.perf_counter() - before)
        from_timer = time.perf_counter() - started
    finally:
        session.force_async = False
    assert queued, "the render did not reach its end"
    print(json.dumps({
        "frames": args.frames, "size": list(args.size),
        "in_one_go_blocked_s": round(in_one_go, 2),
        "from_timer_total_s": round(from_timer, 2),
        "from_timer_ticks": len(ticks),
        "from_timer_longest_block_ms": round(1000 * max(ticks), 1),
        "from_timer_median_block_ms": round(1000 * statistics.median(ticks), 1),
    }, indent=1))


if __name__ == "__main__":
    main()
