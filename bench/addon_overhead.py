"""The add-on's own cost per frame in Blender: exporting driving footage and importing results.

    .venvs/blender/bin/python bench/addon_overhead.py [--frames 81 810]

Runs in the bpy module (Blender's own Python, no torch). The add-on is loaded from
this checkout as the extension `scail2` (run it with BLENDER_USER_RESOURCES pointing
at a scratch folder). Import is timed as strip, plane and
both; export as a movie strip read directly and as one that must be baked
(rendered through the sequencer, at 256 px).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import time

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOOTAGE = os.path.join(REPO, "tests", "fixtures", "footage", "scail_001_driving.mp4")
SIZE = (512, 288)  # generated frame size (width, height) for the import timing


def load_addon():
    """Enable this checkout as the extension `bl_ext.user_default.scail2` (a symlink in the user repository)."""
    import bpy

    repo = bpy.utils.user_resource("EXTENSIONS", path="user_default", create=True)
    link = os.path.join(repo, "scail2")
    if not os.path.exists(link):
        os.symlink(REPO, link)
    bpy.ops.preferences.addon_enable(module="bl_ext.user_default.scail2")
    return sys.modules["bl_ext.user_default.scail2"]


def fake_job(folder: str, frames: int, pixels) -> str:
    """A finished job folder: `frames` PNGs (hard links to one file) and its manifest."""
    os.makedirs(os.path.join(folder, "frames"))
    first = os.path.join(folder, "frames", "frame_000000.png")
    pixels.write_png(first, SIZE[0], SIZE[1], bytes(SIZE[0] * SIZE[1] * 3))
    entries = []
    for k in range(frames):
        name = f"frames/frame_{k:06d}.png"
        if k:
            os.link(first, os.path.join(folder, name))
        entries.append({"index": k, "file": name, "source_frame": k, "source_time": k / 16.0})
    manifest = {
        "format": "scail2-job/1", "id": os.path.basename(folder), "status": "done",
        "job": {"driving": FOOTAGE, "reference": "ref.png", "mode": "animate"}, "seed": 1,
        "model": {"label": "bench"}, "size": [SIZE[1], SIZE[0]], "model_fps": 16.0,
        "source": {"path": FOOTAGE, "fps": 16.0, "frame_count": frames}, "frames": entries, "warnings": [],
    }
    path = os.path.join(folder, "manifest.json")
    with open(path, "w", encoding="utf-8") as f:
        json.dump(manifest, f)
    return path


def show(scene) -> None:
    """The window's scene and, in 5.0+, the workspace's sequencer scene (None in background mode)."""
    import bpy

    window = bpy.context.window_manager.windows[0]
    window.scene = scene
    if hasattr(window.workspace, "sequencer_scene"):
        window.workspace.sequencer_scene = scene


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, nargs="*", default=[81, 810])
    args = parser.parse_args()
    import bpy

    with tempfile.TemporaryDirectory() as tmp:
        addon = load_addon()
        export_strip, pixels = addon.sources.export_strip, addon.core.pixels

        for frames in args.frames:
            scene = bpy.data.scenes.new(f"bench{frames}")
            scene.render.fps = 24
            cam = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
            scene.collection.objects.link(cam)
            scene.camera = cam
            manifest = fake_job(os.path.join(tmp, f"job{frames}"), frames, pixels)
            show(scene)
            with bpy.context.temp_override(scene=scene):
                for form in ("STRIP", "PLANE", "BOTH"):
                    result = []
                    seconds = timed(lambda: result.append(
                        bpy.ops.scail2.import_result(filepath=manifest, form=form, frame_start=1)))
                    assert result == [{"FINISHED"}], result
                    print(f"import {form.lower():5s} {frames:4d} frames: {seconds:.3f} s "
                          f"({1000 * seconds / frames:.2f} ms/frame)")

        scene = bpy.data.scenes.new("export")
        scene.render.fps = 16
        strip = scene.sequence_editor_create().strips.new_movie("driving", FOOTAGE, channel=1, frame_start=1)
        direct = timed(lambda: export_strip(scene, strip, os.path.join(tmp, "direct")))
        print(f"export direct {strip.frame_final_duration} frames: {direct:.3f} s")
        strip.color_saturation = 0.5  # a change Blender must bake in
        baked = timed(lambda: export_strip(scene, strip, os.path.join(tmp, "baked"), max_size=256))
        print(f"export baked  {strip.frame_final_duration} frames: {baked:.3f} s "
              f"({1000 * baked / strip.frame_final_duration:.1f} ms/frame)")
        bpy.ops.preferences.addon_disable(module="bl_ext.user_default.scail2")  # bpy hangs at exit otherwise


if __name__ == "__main__":
    main()
