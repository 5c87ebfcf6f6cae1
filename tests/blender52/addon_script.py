"""Inside a real Blender application (``blender -b --python``): the installed extension generates and imports.

Run by ``run.py`` after ``blender --command extension install-file --enable`` as

    blender -b --python-exit-code 1 --python addon_script.py -- CONFIG_JSON REPORT_JSON

CONFIG_JSON names the backend Python, the footage, the reference and a work folder. Every step is recorded in
REPORT_JSON as ``{name: {"ok", "detail", "seconds"}}``; a failing step does not stop the later ones, so one run
shows every problem. ``run.py`` decides pass or fail from the report.
"""

import json
import os
import sys
import time
import traceback

import bpy

CONFIG_PATH, REPORT_PATH = sys.argv[sys.argv.index("--") + 1:][:2]
with open(CONFIG_PATH, encoding="utf-8") as fh:
    CONFIG = json.load(fh)

PKG = "bl_ext.user_default.scail2"
FRAMES = (1, 8)  # scene frames of the job: 8 generated frames
report = {"blender": bpy.app.version_string, "python": sys.version.split()[0], "background": bpy.app.background}
state = {}


def step(fn):
    started = time.monotonic()
    try:
        report[fn.__name__] = {"ok": True, "detail": fn()}
    except BaseException:
        report[fn.__name__] = {"ok": False, "detail": traceback.format_exc()}
    report[fn.__name__]["seconds"] = round(time.monotonic() - started, 2)
    return fn


def require(condition, what):
    if not condition:
        raise AssertionError(what)


def imported(scene):
    strips = [s for s in scene.sequence_editor.strips_all if "scail2" in s]
    planes = [o for o in scene.objects if "scail2" in o]
    return strips, planes


def strip_range(strip):
    return [strip.frame_final_start, strip.frame_final_end, strip.channel, len(strip.elements)]


def plane_detail(plane):
    (texture,) = [n for n in plane.active_material.node_tree.nodes if n.type == 'TEX_IMAGE']
    folder = os.path.dirname(bpy.path.abspath(texture.image.filepath))
    return {
        "parent": plane.parent.name if plane.parent else None,
        "source": texture.image.source,
        "frame_start": texture.image_user.frame_start,
        "frame_duration": texture.image_user.frame_duration,
        "files": len([name for name in os.listdir(folder) if name.endswith(".png")]),
        "size": [round(v, 3) for v in plane.dimensions[:2]],
    }


# --- The steps, in the order an artist takes them.

@step
def extension_enabled():
    """``install-file --enable`` saved the preferences: this fresh Blender starts with the add-on on."""
    require(PKG in bpy.context.preferences.addons, "add-on not enabled: " + ", ".join(
        a.module for a in bpy.context.preferences.addons))
    require(hasattr(bpy.ops.scail2, "generate"), "scail2.generate not registered")
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.python_path = CONFIG["backend_python"]
    prefs.model_source, prefs.device = 'TINY', 'CPU'
    prefs.output_dir = os.path.join(CONFIG["work"], "output")
    return {"module": PKG, "file": sys.modules[PKG].__file__}


@step
def generate_both():
    """A tiny job from a movie strip and a reference file, brought back as a strip and a camera plane."""
    scene = bpy.context.scene
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.render.resolution_x, scene.render.resolution_y = 128, 64
    scene.frame_start, scene.frame_end = 1, 48
    window = bpy.context.window_manager.windows[0]
    if hasattr(window.workspace, "sequencer_scene"):  # 5.0+: the sequencer edits the workspace's scene
        window.workspace.sequencer_scene = scene
    editor = scene.sequence_editor_create()
    driving = editor.strips.new_movie("driving", CONFIG["footage"], 1, 1, fit_method='FIT')
    editor.active_strip = driving
    sources = scene.scail2_sources
    sources.driving_source, sources.mask_source = 'STRIP', 'NONE'
    sources.reference_source, sources.reference_file = 'FILE', CONFIG["reference"]
    job = scene.scail2_job
    job.width, job.height = 128, 64
    job.use_custom_sampling = True  # first: turning it on starts the values at the preset's
    job.steps = 2
    job.use_frame_range = True
    job.frame_start, job.frame_end = FRAMES
    job.form, job.camera, job.distance = 'BOTH', scene.camera, 5.0
    started = time.monotonic()
    result = bpy.ops.scail2.generate()  # background mode: runs the job to its end, then imports it
    seconds = round(time.monotonic() - started, 1)
    require(result == {'FINISHED'}, result)
    item = job.history[-1]
    strips, planes = imported(scene)
    require(item.status == 'IMPORTED' and item.frames == 8, (item.status, item.frames))
    require(len(strips) == 1 and len(planes) == 1, (strips, planes))
    strip = strips[0]
    # Scene frames 1-8, one generated frame each, on a channel above the footage.
    require(strip_range(strip)[:2] == [1, 9] and len(strip.elements) == 8, strip_range(strip))
    require(strip.channel > driving.channel, (strip.channel, driving.channel))
    plane = plane_detail(planes[0])
    require(plane["parent"] == scene.camera.name and plane["source"] == 'SEQUENCE', plane)
    require((plane["frame_start"], plane["frame_duration"]) == (1, 8), plane)
    state.update(manifest=item.manifest, camera=scene.camera.name, driving=driving.name)
    return {"seconds": seconds, "strip": strip_range(strip), "plane": plane, "job_dir": item.job_dir}


@step
def import_as_strip():
    """Import Result again as a strip: a second strip with the same frames, timed to the footage."""
    scene = bpy.context.scene
    before, _ = imported(scene)
    result = bpy.ops.scail2.import_result(filepath=state["manifest"], form='STRIP', driving_strip=state["driving"])
    require(result == {'FINISHED'}, result)
    strips, _ = imported(scene)
    (new,) = [s for s in strips if s not in before]
    require(strip_range(new)[:2] == [1, 9] and len(new.elements) == 8, strip_range(new))
    require(new.channel not in [s.channel for s in before], (new.channel, [s.channel for s in before]))
    return strip_range(new)


@step
def import_as_camera_plane():
    """Import Result as a camera plane at another distance: parented to the camera, filling its view."""
    scene = bpy.context.scene
    _, before = imported(scene)
    result = bpy.ops.scail2.import_result(filepath=state["manifest"], form='PLANE', camera=state["camera"],
                                          distance=2.5)
    require(result == {'FINISHED'}, result)
    _, planes = imported(scene)
    (new,) = [p for p in planes if p not in before]
    detail = plane_detail(new)
    require(detail["parent"] == state["camera"] and detail["files"] >= 8, detail)
    require((detail["frame_start"], detail["frame_duration"]) == (1, 8), detail)
    # Half the distance of the first plane: half its size (both fill the same camera view).
    first = plane_detail(before[0])["size"]
    require(abs(detail["size"][0] * 2 - first[0]) < 1e-2, (detail["size"], first))
    distance = (new.matrix_world.translation - scene.camera.matrix_world.translation).length
    require(abs(distance - 2.5) < 1e-3, distance)
    return detail


@step
def plane_shows_nothing_outside_its_frames():
    """The camera plane of a frames 1-8 job shows nothing at frames 100 and 190 (nor before frame 1)."""
    scene = bpy.context.scene
    _, planes = imported(scene)
    shown = {}
    for frame in (0, 1, 8, 9, 100, 190):
        scene.frame_set(frame)
        shown[frame] = [p.active_material.node_tree.nodes["SCAIL2 Shown"].inputs["Fac"].default_value for p in planes]
    scene.frame_set(1)
    require(all(v == [1.0] * len(planes) for f, v in shown.items() if 1 <= f <= 8), shown)
    require(all(v == [0.0] * len(planes) for f, v in shown.items() if not 1 <= f <= 8), shown)
    return shown


@step
def import_result_in_the_add_menus_and_on_drop():
    """Import Result in the sequencer's and the 3D viewport's Add menus; the file handler for job files."""
    entries = {menu: [f.__module__ for f in getattr(bpy.types, menu)._dyn_ui_initialize()
                      if f.__module__.startswith(PKG)] for menu in ("SEQUENCER_MT_add", "VIEW3D_MT_add")}
    require(all(entries.values()), entries)
    handler = bpy.types.SCAIL2_FH_import_result
    require(handler.bl_import_operator == "scail2.import_result", handler.bl_import_operator)
    return entries


@step
def save_and_disable():
    path = os.path.join(CONFIG["work"], "shot.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    bpy.ops.preferences.addon_disable(module=PKG)  # stops the worker process
    return path


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1)
sys.exit(0 if all(v.get("ok") for v in report.values() if isinstance(v, dict)) else 1)
