"""Child-process script for runtime/test_extra_views.py: extra views through the installed extension.

Run as ``python extra_views_script.py ZIP WORK_DIR REPORT_JSON MODE`` with ``BLENDER_USER_RESOURCES`` set.
WORK_DIR/config.json names the backend Python, the footage, the reference (and for MODE ``remote`` the
worker's address and token; for ``local`` the openjd command). A shot gets two extra views from files
(one PNG with alpha, one JPEG with a painted mask file) and a four-view turnaround around a character
box assigned identity 1, then generates with the tiny worker: locally (``local``, then through a farm
bundle run by ``openjd``), or on a TLS worker that cannot see Blender's files (``remote``).
"""

import hashlib
import json
import os
import subprocess
import sys
import time

ZIP_PATH, WORK_DIR, REPORT_PATH, MODE = sys.argv[1:5]

import bpy  # noqa: E402  (after the environment is set)
from script_common import draw_panels, install_tiny, module, render_inputs, report, show, step  # noqa: E402

with open(os.path.join(WORK_DIR, "config.json"), encoding="utf-8") as fh:
    CONFIG = json.load(fh)
STATE = {}
ANGLES = "0 45 90 180"


def write_pictures():
    """A 48x64 RGBA PNG (an opaque block on transparency) and a mask for the reference (blue on white)."""
    pixels = module(".core.pixels")
    width, height = 48, 64
    rgba = bytearray()
    for y in range(height):
        for x in range(width):
            inside = 12 <= x < 36 and 8 <= y < 56
            rgba += bytes((200, 120, 80, 255 if inside else 0))
    with_alpha = os.path.join(WORK_DIR, "side_alpha.png")
    pixels.write_png(with_alpha, width, height, rgba, channels=4)
    ref_w, ref_h = bpy.data.images.load(CONFIG["reference"]).size
    mask = bytearray()
    for y in range(ref_h):
        for x in range(ref_w):
            mask += bytes((0, 0, 255) if ref_w // 4 <= x < 3 * ref_w // 4 else (255, 255, 255))
    mask_path = os.path.join(WORK_DIR, "ref_mask.png")
    pixels.write_png(mask_path, ref_w, ref_h, mask, channels=3)
    return with_alpha, mask_path


def character(scene):
    """A box 1.6 wide, 0.4 deep and 2 tall (its front and its side differ), identity 1."""
    mesh = bpy.data.meshes.new("Hero")
    verts = [(x, y, z) for x in (-0.8, 0.8) for y in (-0.2, 0.2) for z in (0.0, 2.0)]
    faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
    mesh.from_pydata(verts, [], faces)
    hero = bpy.data.objects.new("Hero", mesh)
    scene.collection.objects.link(hero)
    module(".props.input_settings").assign_identity(scene.scail2_sources.identities, [('OBJECT', hero)], 1)
    return hero


def state_of(scene):
    """What the turnaround must leave as it was."""
    return {"objects": sorted(o.name for o in bpy.data.objects), "cameras": sorted(c.name for c in bpy.data.cameras),
            "scenes": sorted(s.name for s in bpy.data.scenes), "camera": scene.camera.name if scene.camera else None,
            "engine": scene.render.engine, "transparent": scene.render.film_transparent,
            "frame": scene.frame_current, "filepath": scene.render.filepath}


def recorded_views(scene):
    inputs = module(".sources").load_inputs(module(".sources.exports").inputs_folder(bpy.context, scene))
    return inputs.get("extra_references") or []


@step
def install():
    prefs = install_tiny(ZIP_PATH, CONFIG["backend_python"], os.path.join(WORK_DIR, "output"))
    if MODE == "remote":
        prefs.worker_location = 'REMOTE'
        prefs.remote_address, prefs.remote_token = CONFIG["address"], CONFIG["token"]
    return sorted(op for op in dir(bpy.ops.scail2))


if MODE == "remote":
    @step
    def accept_certificate():
        assert bpy.ops.scail2.show_worker_certificate() == {'FINISHED'}
        remote = module(".operators.remote")
        deadline = time.monotonic() + 60
        while remote.land_certificate() is not None:
            assert time.monotonic() < deadline, "the certificate never came"
            time.sleep(0.1)
        assert bpy.ops.scail2.trust_worker_certificate() == {'FINISHED'}


@step
def views_from_files():
    scene = bpy.data.scenes.new("Views")
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
    job.steps = 1
    job.use_frame_range, job.frame_start, job.frame_end = True, 1, 4
    job.use_seed_lock, job.seed = True, 7
    show(scene)
    STATE["scene"] = scene
    with_alpha, mask_path = write_pictures()
    STATE["with_alpha"] = with_alpha
    assert bpy.ops.scail2.add_extra_view_files(directory=WORK_DIR, files=[{"name": "side_alpha.png"}]) == {'FINISHED'}
    assert bpy.ops.scail2.add_extra_view() == {'FINISHED'}
    view = scene.scail2_extra_views.views[-1]
    view.source, view.file, view.mask_source, view.mask_file = 'FILE', CONFIG["reference"], 'FILE', mask_path
    result = bpy.ops.scail2.export_extra_views()
    assert result == {'FINISHED'}, result
    return {"views": recorded_views(scene)}


@step
def turnaround():
    scene = STATE["scene"]
    hero = character(scene)
    extra = scene.scail2_extra_views
    extra.turnaround_object, extra.turnaround_angles, extra.turnaround_engine = hero, ANGLES, 'WORKBENCH'
    before = state_of(scene)
    result = bpy.ops.scail2.render_turnaround()
    assert result == {'FINISHED'}, result
    after = state_of(scene)
    render = module(".sources.render")
    pixels = module(".core.pixels")
    views = recorded_views(scene)
    shapes = []
    for view in views[2:]:
        picture, width, height = render.read_pixels(view["path"])
        mask, mask_w, mask_h = render.read_pixels(view["mask_path"])
        alpha = pixels.coverage(picture[3:], channels=4)
        counts = pixels.classify(mask)
        blue = bytes(r == 0.0 and b == 1.0 for r, b in zip(mask[0::4], mask[2::4]))  # identity 1: blue
        shapes.append({"size": [width, height], "mask_size": [mask_w, mask_h], "alpha_pixels": alpha.count(1),
                       "mask_pixels": blue.count(1), "both": bytes(map(min, alpha, blue)).count(1),
                       "exact": counts["exact"], "identities": sorted(counts["identities"]),
                       "white": counts["white"]})
    return {"views": views, "before": before, "after": after, "shapes": shapes,
            "list": [[v.source, v.target.name if v.target else None, round(v.angle, 4)] for v in extra.views]}


@step
def generate():
    scene = STATE["scene"]
    result = bpy.ops.scail2.generate()
    assert result == {'FINISHED'}, result
    done = module(".runtime.session").scene_jobs(scene)[-1]
    with open(done.manifest, encoding="utf-8") as fh:
        manifest = json.load(fh)
    views = recorded_views(scene)
    files = [view[key] for view in views for key in ("path", "mask_path")]
    return {"status": done.status, "manifest": manifest, "views": views,
            "sha256": {path: hashlib.sha256(open(path, "rb").read()).hexdigest() for path in files}}


@step
def a_changed_view_is_exported_again():
    scene = STATE["scene"]
    exports = module(".sources.exports")
    first = recorded_views(scene)
    stale_before = exports.stale_exports(bpy.context, module(".sources").load_inputs(
        exports.inputs_folder(bpy.context, scene)))
    pixels = module(".core.pixels")
    time.sleep(0.01)  # a new modification time even on coarse clocks
    pixels.write_png(STATE["with_alpha"], 32, 64, bytes(32 * 64 * 4), channels=4)  # now fully transparent
    stale_after = exports.stale_exports(bpy.context, module(".sources").load_inputs(
        exports.inputs_folder(bpy.context, scene)))
    assert bpy.ops.scail2.export_extra_views() == {'FINISHED'}
    second = recorded_views(scene)
    return {"stale_before": stale_before, "stale_after": stale_after, "first": first, "second": second}


@step
def a_view_of_an_identity_not_in_the_driving_mask_is_one_line():
    scene = STATE["scene"]
    view = scene.scail2_extra_views.views[0]
    view.mask_source, view.identity = 'ALPHA', 2
    pixels = module(".core.pixels")
    pixels.write_png(STATE["with_alpha"], 32, 64, bytes((9, 9, 9, 255)) * (32 * 64), channels=4)
    jobs_before = len(module(".runtime.session").scene_jobs(scene))
    try:
        bpy.ops.scail2.generate()
    except RuntimeError as ex:
        message = str(ex)
    else:
        raise AssertionError("Generate did not refuse the view")
    view.identity = 1
    return {"message": message, "jobs_added": len(module(".runtime.session").scene_jobs(scene)) - jobs_before}


if MODE == "local":
    @step
    def farm_bundle():
        scene = STATE["scene"]
        result = bpy.ops.scail2.send_to_farm(directory=os.path.join(WORK_DIR, "farm"))
        assert result == {'FINISHED'}, result
        item = scene.scail2_job.history[-1]
        farm = json.loads(item.settings_json)["farm"]
        with open(os.path.join(farm["bundle"], "job.json"), encoding="utf-8") as fh:
            bundled = json.load(fh)
        run = subprocess.run([CONFIG["openjd"], "run", farm["openjd"], "--step", item.job_id], cwd=WORK_DIR,
                             capture_output=True, text=True, timeout=600)
        assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
        with open(item.manifest, encoding="utf-8") as fh:
            manifest = json.load(fh)
        spec = json.loads(item.settings_json)["spec"]
        return {"bundle": farm["bundle"], "job": bundled, "manifest": manifest, "spec": spec,
                "sha256": [hashlib.sha256(open(path, "rb").read()).hexdigest() for path in spec["extra_references"]]}


@step
def panels_draw():
    drawn = draw_panels()
    return {name: calls for name, calls in drawn.items() if "extra_views" in name}


@step
def turnaround_from_a_timer():
    """As in the interface: the button returns at once and a timer renders a view per tick, with progress."""
    scene = STATE["scene"]
    session, input_render = module(".runtime.session"), module(".runtime.input_render")
    scene.scail2_extra_views.turnaround_angles = "135 270"
    before = state_of(scene)
    session.force_async = True
    try:
        result = bpy.ops.scail2.render_turnaround()
        running = input_render.active() is not None
        rendered_at_return = len(recorded_views(scene))
        shown = render_inputs()
    finally:
        session.force_async = False
    return {"result": sorted(result), "running": running, "shown": shown, "before": before,
            "after": state_of(scene), "rendered_at_return": rendered_at_return,
            "views": recorded_views(scene), "list": len(scene.scail2_extra_views.views)}


@step
def close():
    module(".runtime.session").close_queue()


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1, default=str)
