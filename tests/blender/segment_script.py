"""Child-process script for test_segment.py: Auto Masks and Matte through the installed extension.

Run as ``python segment_script.py ZIP WORK_DIR REPORT_JSON`` with
``BLENDER_USER_RESOURCES`` pointing at an empty folder (set before ``bpy`` is
imported). WORK_DIR/config.json names the backend Python, the footage and the
reference. Installs and enables the built extension, points it at the backend
environment with the tiny test models on the CPU (a real worker: random SAM 3
and SCAIL-2 weights), and records every step in REPORT_JSON as
``{name: {"ok": bool, "detail": ...}}``; a failing step does not stop the
later ones. The checks themselves are in test_segment.py.

The bpy module runs in background mode, so the operators run their job to the
end before returning; the interactive path (a timer follows the job) is run by
setting ``runtime.session.force_async`` and calling ``runtime.follow.tick`` by hand.
"""

import json
import os
import sys
import time

ZIP_PATH, WORK_DIR, REPORT_PATH = sys.argv[1:4]

import bpy  # noqa: E402  (after the environment is set)
from script_common import (  # noqa: E402,F401
    HAS_SEQUENCER_SCENE, PKG, REPO, add_movie_as_in_the_ui, draw_panels, install_tiny, module, pump, report, show,
    step, window)
import numpy as np  # noqa: E402  (bundled with bpy)

with open(os.path.join(WORK_DIR, "config.json"), encoding="utf-8") as fh:
    CONFIG = json.load(fh)

PALETTE = [(0, 0, 255), (255, 0, 0), (0, 255, 0), (255, 0, 255), (0, 255, 255), (255, 255, 0)]

SCENES = {}


def new_scene(name, fps, resolution=(256, 135)):
    scene = bpy.data.scenes.new(name)
    scene.render.fps, scene.render.fps_base = fps, 1.0
    scene.render.resolution_x, scene.render.resolution_y = resolution
    scene.frame_start, scene.frame_end = 1, 30
    scene.sequence_editor_create()
    return scene


def add_footage(scene, channel, frame_start, name="footage"):
    strip = add_movie_as_in_the_ui(scene, CONFIG["footage"], channel, frame_start)
    strip.name = name
    return strip


def add_camera(scene):
    camera = bpy.data.objects.new(scene.name + " Cam", bpy.data.cameras.new(scene.name + " Cam"))
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.location = (0.0, -8.0, 1.0)
    camera.rotation_euler = (1.5708, 0.0, 0.0)
    return camera


def set_up_inputs(scene, footage, max_size=64):
    scene.sequence_editor.active_strip = footage
    src = scene.scail2_sources
    src.driving_source = 'STRIP'
    src.mask_source = 'NONE'
    src.reference_source = 'FILE'
    src.reference_file = CONFIG["reference"]
    src.max_size = max_size
    src.auto_mask_prompt = "person"
    src.auto_mask_identities = 2
    show(scene)
    return src


def snapshot(scene):
    """Everything a failed or cancelled job must leave as it was."""
    editor = scene.sequence_editor
    src = scene.scail2_sources
    return {
        "strips": sorted([s.name, s.channel, s.frame_final_start, s.frame_final_end, s.mute]
                         for s in editor.strips_all) if editor is not None else [],
        "objects": sorted(o.name for o in bpy.data.objects),
        "images": sorted(i.name for i in bpy.data.images),
        "materials": sorted(m.name for m in bpy.data.materials),
        "mask": [src.mask_source, src.mask_strip, src.reference_mask_file],
        "history": len(scene.scail2_job.history),
    }


def mask_strips(scene):
    return [s for s in scene.sequence_editor.strips_all if "scail2_masks" in s]


def strip_detail(strip):
    return {
        "name": strip.name,
        "type": strip.type,
        "channel": strip.channel,
        "frame_final_start": strip.frame_final_start,
        "frame_final_end": strip.frame_final_end,
        "elements": [e.filename for e in strip.elements] if strip.type == 'IMAGE' else [],
        "directory": bpy.path.abspath(strip.directory) if strip.type == 'IMAGE' else "",
        "mute": strip.mute,
        "blend_type": strip.blend_type,
        "scale": [strip.transform.scale_x, strip.transform.scale_y],
        "props": {key: strip[key].to_dict() for key in ("scail2", "scail2_masks") if key in strip},
    }


def pixels_of(path):
    """(width, height, RGBA float array [h, w, 4]) of an image file."""
    image = bpy.data.images.load(path, check_existing=False)
    try:
        width, height = image.size
        data = np.empty(width * height * 4, np.float32)
        image.pixels.foreach_get(data)
        return width, height, data.reshape(height, width, 4)
    finally:
        bpy.data.images.remove(image)


def colours_of(path):
    """The distinct 8-bit RGB colours of an image file."""
    _w, _h, pixels = pixels_of(path)
    rgb = np.round(pixels[..., :3] * 255).astype(np.int32).reshape(-1, 3)
    return sorted({tuple(int(v) for v in c) for c in np.unique(rgb, axis=0)})


def run_expect_error(op, **props):
    try:
        result = op(**props)
    except RuntimeError as ex:
        return str(ex)
    raise AssertionError("the operator did not fail: {!r}".format(result))


def last_job(scene, task):
    return module(".runtime.session").scene_jobs(scene, (task,))[-1]


def material_detail(obj):
    material = obj.active_material
    tree = material.node_tree
    texture = next(n for n in tree.nodes if n.type == 'TEX_IMAGE')
    shader = next(n for n in tree.nodes if n.type == 'BSDF_PRINCIPLED')
    alpha_links = [link.from_node.name for link in shader.inputs["Alpha"].links]
    image_path = bpy.path.abspath(texture.image.filepath)
    return {
        "render_method": material.surface_render_method,
        "alpha_from": alpha_links,
        "texture": texture.name,
        "image": image_path,
        "image_target": os.path.realpath(image_path),
        "alpha_mode": texture.image.alpha_mode,
        "frame_start": texture.image_user.frame_start,
        "frame_duration": texture.image_user.frame_duration,
    }


# --- The steps.

@step
def install():
    prefs = install_tiny(ZIP_PATH, CONFIG["backend_python"], os.path.join(WORK_DIR, "output"))
    worker, _root = module(".runtime.session").worker_setting(prefs)
    prefs.sam3_weights_dir = os.path.join(WORK_DIR, "sam3")
    with_weights, _root = module(".runtime.session").worker_setting(prefs)
    prefs.sam3_weights_dir = ""
    return {"ops": sorted(op for op in dir(bpy.ops.scail2)), "args": list(worker.args),
            "args_with_sam3": list(with_weights.args)}


@step
def auto_masks_of_a_footage_strip():
    """A 16 fps clip added as in the interface to a 24 fps scene, trimmed to scene frames 1-6."""
    scene = new_scene("Masks24", 24)
    footage = add_footage(scene, 2, 1)
    footage.frame_final_end = 7
    other = scene.sequence_editor.strips.new_image("busy", CONFIG["reference"], 3, 1)
    other.frame_final_end = 20
    src = set_up_inputs(scene, footage)
    SCENES["masks"] = scene
    before = snapshot(scene)
    started = time.monotonic()
    result = bpy.ops.scail2.auto_masks()
    took = time.monotonic() - started
    assert result == {'FINISHED'}, result
    [strip] = mask_strips(scene)
    job = last_job(scene, "masks")
    with open(job.record, encoding="utf-8") as fh:
        record = json.load(fh)
    return {
        "seconds": took,
        "before": before,
        "strip": strip_detail(strip),
        "footage": strip_detail(footage),
        "busy_channel": other.channel,
        "mask_source": src.mask_source,
        "mask_strip": src.mask_strip,
        "job": {"status": job.status, "task": job.task, "spec": job.spec, "job_dir": job.job_dir,
                "record": job.record},
        "record": record,
        "colours": colours_of(os.path.join(job.job_dir, record["files"][0])),
        "active": scene.sequence_editor.active_strip.name,
    }


def _paint_masks(strip, count):
    """Replace the auto masks by flat palette colours (the user's own masks): footage frame k gets colour k."""
    pixels = module(".core.pixels")
    folder = bpy.path.abspath(strip.directory)
    for name in sorted(set(e.filename for e in strip.elements)):
        k = int(name.split("_")[1].split(".")[0])
        width, height, _ = pixels_of(os.path.join(folder, name))
        pixels.write_png(os.path.join(folder, name), width, height, bytes(PALETTE[k % count]) * (width * height))


@step
def preview_and_export_use_the_mask_strip():
    scene = SCENES["masks"]
    show(scene)
    [strip] = mask_strips(scene)
    _paint_masks(strip, 4)
    previews = {}
    for frame in (2, 4):
        scene.frame_current = frame
        assert bpy.ops.scail2.preview_mask() == {'FINISHED'}
        path = bpy.path.abspath(scene.scail2_sources.mask_preview)
        width, height, pixels = pixels_of(path)
        centre = pixels[height // 2, width // 2, :3]
        previews[frame] = {"path": path, "size": [width, height], "centre": [round(float(v) * 255) for v in centre]}
    # With the mask strip active (the user inspecting it), exports still read the footage it stands for.
    scene.sequence_editor.active_strip = strip
    assert bpy.ops.scail2.export_all_inputs() == {'FINISHED'}
    active = scene.sequence_editor.active_strip.name
    folder = module(".sources.exports").inputs_folder(bpy.context, scene)
    with open(os.path.join(folder, "inputs.json"), encoding="utf-8") as fh:
        inputs = json.load(fh)
    mask = inputs["driving_mask"]
    exported = []
    for index in range(mask["frame_start"], mask["frame_end"]):
        exported.append(colours_of(mask["files"][index]))
    return {"previews": previews, "driving": inputs["driving"], "mask": mask, "exported_colours": exported,
            "active": active}


@step
def auto_mask_of_the_reference():
    scene = SCENES["masks"]
    show(scene)
    src = scene.scail2_sources
    result = bpy.ops.scail2.auto_reference_mask()
    assert result == {'FINISHED'}, result
    job = last_job(scene, "masks")
    folder = module(".sources.exports").inputs_folder(bpy.context, scene)
    with open(os.path.join(folder, "inputs.json"), encoding="utf-8") as fh:
        inputs = json.load(fh)
    with open(job.record, encoding="utf-8") as fh:
        record = json.load(fh)
    # Export the reference again: the Reference Mask setting stays with it.
    assert bpy.ops.scail2.export_reference() == {'FINISHED'}
    with open(os.path.join(folder, "inputs.json"), encoding="utf-8") as fh:
        again = json.load(fh)
    return {
        "reference_mask_file": bpy.path.abspath(src.reference_mask_file),
        "job_dir": job.job_dir,
        "spec": job.spec,
        "record": record,
        "reference": inputs["reference"],
        "reference_mask_mode": inputs.get("reference_mask_mode"),
        "again": again["reference"],
        "again_mode": again.get("reference_mask_mode"),
        "colours": colours_of(os.path.join(job.job_dir, "mask.png")),
        "last_check": src.last_check,
    }


@step
def failed_masks_job_changes_nothing():
    """Footage whose images the worker cannot read: the job fails, the scene stays as it was."""
    scene = new_scene("Broken", 24)
    folder = os.path.join(WORK_DIR, "broken")
    os.makedirs(folder, exist_ok=True)
    for i in range(3):
        with open(os.path.join(folder, "img_{:03d}.png".format(i)), "wb") as fh:
            fh.write(b"not a picture")
    strip = scene.sequence_editor.strips.new_image("broken", os.path.join(folder, "img_000.png"), 1, 1)
    for i in (1, 2):
        strip.elements.append("img_{:03d}.png".format(i))
    set_up_inputs(scene, strip)
    before = snapshot(scene)
    message = run_expect_error(bpy.ops.scail2.auto_masks)
    job = last_job(scene, "masks")
    return {"message": message, "status": job.status, "error": job.error.code if job.error else None,
            "before": before, "after": snapshot(scene)}


@step
def cancelled_masks_job_changes_nothing():
    session, follow = module(".runtime.session"), module(".runtime.follow")
    session.force_async = True
    scene = new_scene("Cancel", 24)
    footage = add_footage(scene, 1, 1)  # the whole clip
    set_up_inputs(scene, footage)
    before = snapshot(scene)
    try:
        assert bpy.ops.scail2.auto_masks() == {'FINISHED'}
        job = last_job(scene, "masks")
        pump(lambda: job.finished or (job.status == "running" and job.phase == "segment"))
        seen = job.phase_text()
        assert bpy.ops.scail2.cancel_job(job=job.key) == {'FINISHED'}
        pump(lambda: job.finished, timeout=60.0)
        follow.tick()
        return {"status": job.status, "seen": seen, "before": before, "after": snapshot(scene),
                "job_dir": job.job_dir, "record": os.path.isfile(os.path.join(job.job_dir, "segment.json"))}
    finally:
        session.force_async = False


@step
def interactive_auto_masks_is_one_undo_step():
    session, follow = module(".runtime.session"), module(".runtime.follow")
    session.force_async = True
    scene = new_scene("Undo", 16)
    footage = scene.sequence_editor.strips.new_movie("footage", CONFIG["footage"], 1, 1, fit_method='FIT')
    footage.frame_final_end = 4
    set_up_inputs(scene, footage)
    try:
        with bpy.context.temp_override(window=window()):
            bpy.ops.ed.undo_push(message="before Auto Masks")
        before = snapshot(scene)
        started = time.monotonic()
        assert bpy.ops.scail2.auto_masks() == {'FINISHED'}
        returned = time.monotonic() - started
        job = last_job(scene, "masks")
        status_at_return = job.status
        phases = set()
        pump(lambda: phases.add(job.phase_text()) or job.finished)
        follow.tick()
        after = snapshot(scene)
        with bpy.context.temp_override(window=window()):
            assert bpy.ops.ed.undo() == {'FINISHED'}
        undone = snapshot(bpy.data.scenes["Undo"])
        with bpy.context.temp_override(window=window()):
            assert bpy.ops.ed.redo() == {'FINISHED'}
        redone = snapshot(bpy.data.scenes["Undo"])
        return {"returned_after": returned, "status_at_return": status_at_return, "status": job.status,
                "phases": sorted(phases), "before": before, "after": after, "undone": undone, "redone": redone}
    finally:
        session.force_async = False
        SCENES.clear()  # undo replaced every datablock


# Refine Masks' rough mask: per footage frame, (palette colour, x0, y0, x1, y1) from the top left of the
# 64x34 mask canvas of the 2048x1080 clip (Inputs' size limit 64). Red enters on frame 1.
ROUGH_CANVAS = (64, 34)
ROUGH_FRAMES = [
    [((0, 0, 255), 4, 6, 20, 30)],
    [((0, 0, 255), 6, 6, 22, 30), ((255, 0, 0), 40, 2, 56, 32)],
    [((0, 0, 255), 8, 6, 24, 30), ((255, 0, 0), 38, 2, 54, 32)],
    [((0, 0, 255), 10, 6, 26, 30), ((255, 0, 0), 36, 2, 52, 32)],
]


def _paint_rough(folder, frames, size=ROUGH_CANVAS):
    """Painted rough masks as an image sequence (rough_000.png, ...) on black; returns the first file."""
    pixels = module(".core.pixels")
    os.makedirs(folder, exist_ok=True)
    width, height = size
    for index, rects in enumerate(frames):
        rows = [bytearray(bytes(3) * width) for _ in range(height)]
        for colour, x0, y0, x1, y1 in rects:
            for y in range(y0, y1):
                rows[y][3 * x0:3 * x1] = bytes(colour) * (x1 - x0)
        pixels.write_png(os.path.join(folder, "rough_{:03d}.png".format(index)), width, height,
                         b"".join(rows), bottom_up=False)
    return os.path.join(folder, "rough_000.png")


def _rough_strip(scene, name, first, count, channel):
    strip = scene.sequence_editor.strips.new_image(name, first, channel, 1, fit_method='FIT')
    for index in range(1, count):
        strip.elements.append("rough_{:03d}.png".format(index))
    return strip


@step
def refine_masks_of_a_rough_mask_strip():
    """A rough two-colour mask strip over 4 frames of 16 fps footage: Refine Masks marks a box per colour."""
    scene = new_scene("Refine16", 16)
    footage = scene.sequence_editor.strips.new_movie("footage", CONFIG["footage"], 1, 1, fit_method='FIT')
    footage.frame_final_end = 5  # footage frames 0-3 at scene frames 1-4
    src = set_up_inputs(scene, footage)
    # No rough mask yet: the button is not available; a strip without identity colours is refused.
    src.mask_source = 'NONE'
    unavailable = run_expect_error(bpy.ops.scail2.refine_masks)
    blank = _rough_strip(scene, "blank", _paint_rough(os.path.join(WORK_DIR, "blank"), [[]] * 4), 4, 3)
    src.mask_source, src.mask_strip = 'MASK_STRIP', blank.name
    no_identity = run_expect_error(bpy.ops.scail2.refine_masks)
    scene.sequence_editor.strips.remove(blank)
    rough = _rough_strip(scene, "rough", _paint_rough(os.path.join(WORK_DIR, "rough"), ROUGH_FRAMES), 4, 2)
    src.mask_strip = rough.name
    scene.sequence_editor.active_strip = footage
    result = bpy.ops.scail2.refine_masks()
    assert result == {'FINISHED'}, result
    job = last_job(scene, "masks")
    with open(job.record, encoding="utf-8") as fh:
        record = json.load(fh)
    refined = [s for s in mask_strips(scene) if s.name.endswith("Refined Masks")]
    _frames, width, height = module(".sources.render").movie_info(CONFIG["footage"])
    return {
        "unavailable": unavailable,
        "no_identity": no_identity,
        "clip_size": [width, height],
        "job": {"status": job.status, "task": job.task, "spec": job.spec, "job_dir": job.job_dir},
        "record": record,
        "strips": [strip_detail(s) for s in refined],
        "footage": strip_detail(footage),
        "rough": strip_detail(rough),
        "mask_source": src.mask_source,
        "mask_strip": src.mask_strip,
        "colours": colours_of(os.path.join(job.job_dir, record["files"][0])),
    }


@step
def generate_then_matte():
    """A tiny generation brought back as strip and plane, then its Matte: both switch to the RGBA frames."""
    scene = new_scene("Matte24", 24, resolution=(128, 64))
    footage = scene.sequence_editor.strips.new_movie("footage", CONFIG["footage"], 1, 1, fit_method='FIT')
    add_camera(scene)
    set_up_inputs(scene, footage)
    job = scene.scail2_job
    job.width, job.height = 128, 64
    job.use_custom_sampling = True  # first: turning it on starts the values at the preset's
    job.steps = 2
    job.use_frame_range, job.frame_start, job.frame_end = True, 1, 4
    job.form = 'BOTH'
    assert bpy.ops.scail2.generate() == {'FINISHED'}
    item = job.history[0]
    [strip] = [s for s in scene.sequence_editor.strips if "scail2" in s]
    [plane] = [o for o in scene.objects if "scail2" in o]
    before = {"strip": strip_detail(strip), "material": material_detail(plane)}
    result = bpy.ops.scail2.matte_result(index=0)
    assert result == {'FINISHED'}, result
    matte_job = last_job(scene, "matte")
    after = {"strip": strip_detail(strip), "material": material_detail(plane)}
    assert bpy.ops.scail2.history_import(index=0) == {'FINISHED'}
    strips = [s for s in scene.sequence_editor.strips if "scail2" in s]
    planes = [o for o in scene.objects if "scail2" in o and o != plane]
    return {
        "job_dir": item.job_dir,
        "manifest": item.manifest,
        "matte_job": {"status": matte_job.status, "job_dir": matte_job.job_dir, "spec": matte_job.spec,
                      "record": matte_job.record},
        "before": before,
        "after": after,
        "again": {"strip": strip_detail(strips[-1]), "material": material_detail(planes[-1])},
        "plane_files": sorted(os.listdir(os.path.dirname(after["material"]["image"]))),
    }


@step
def generate_with_matte():
    scene = bpy.data.scenes["Matte24"]
    show(scene)
    job = scene.scail2_job
    job.use_matte = True
    scene.scail2_sources.auto_mask_prompt = "woman"  # the matte looks for what Auto Masks looks for
    assert bpy.ops.scail2.generate() == {'FINISHED'}
    item = job.history[-1]
    strips = [s for s in scene.sequence_editor.strips if "scail2" in s]
    planes = [o for o in scene.objects if "scail2" in o]
    newest = max(planes, key=lambda o: o.name)
    with open(item.manifest, encoding="utf-8") as fh:
        manifest = json.load(fh)
    return {"job_dir": item.job_dir, "manifest": manifest, "strip": strip_detail(strips[-1]),
            "material": material_detail(newest), "spec": json.loads(item.settings_json)["spec"]}


@step
def panels_draw():
    """The SCAIL panels draw, with the Auto Masks and Matte parts, in both editors."""
    scene = bpy.data.scenes["Matte24"]
    show(scene)
    scene.scail2_sources.mask_source = 'MASK_STRIP'
    return draw_panels()


@step
def disable():
    bpy.ops.preferences.addon_disable(module=PKG)
    return sorted(n for n in dir(bpy.types) if n.startswith("SCAIL2_"))


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1)
