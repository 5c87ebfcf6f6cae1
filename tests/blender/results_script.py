"""Child-process script for test_results.py: import SCAIL-2 results into scenes built in code.

Run as ``python results_script.py ZIP WORK_DIR REPORT_JSON`` with
``BLENDER_USER_RESOURCES`` pointing at an empty folder (set before ``bpy`` is
imported). WORK_DIR holds the jobs test_results.py wrote (``jobs.json`` names
them). Installs and enables the built extension, then records every step in
REPORT_JSON as ``{name: {"ok": bool, "detail": ...}}``; a failing step does not
stop the later ones. The checks themselves are in test_results.py.
"""

import json
import os
import sys
import traceback

ZIP_PATH, WORK_DIR, REPORT_PATH = sys.argv[1:4]

import bpy  # noqa: E402  (after the environment is set)
import numpy as np  # noqa: E402  (bundled with bpy)
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402

with open(os.path.join(WORK_DIR, "jobs.json"), encoding="utf-8") as fh:
    JOBS = json.load(fh)
FOOTAGE = JOBS["footage"]
RENDERS = os.path.join(WORK_DIR, "renders")
os.makedirs(RENDERS, exist_ok=True)

REPO = "user_default"
PKG = "bl_ext.{:s}.scail2".format(REPO)
HAS_SEQUENCER_SCENE = bpy.app.version >= (5, 0, 0)
WINDOW = bpy.context.window_manager.windows[0]
# The movie-add operator needs a sequencer area.
SEQ_AREA = WINDOW.screen.areas[-1]
SEQ_AREA.type = 'SEQUENCE_EDITOR'

report = {"blender_version": bpy.app.version_string}


def step(fn):
    """Run ``fn`` now and record its outcome under its name."""
    try:
        report[fn.__name__] = {"ok": True, "detail": fn()}
    except BaseException:
        report[fn.__name__] = {"ok": False, "detail": traceback.format_exc()}
    return fn


# --- Scenes.

def new_scene(name, fps, resolution=(64, 34)):
    scene = bpy.data.scenes.new(name)
    scene.render.fps = fps
    scene.render.fps_base = 1.0
    scene.render.resolution_x, scene.render.resolution_y = resolution
    scene.render.resolution_percentage = 100
    scene.render.image_settings.file_format = 'PNG'
    scene.view_settings.view_transform = 'Standard'
    scene.sequence_editor_create()
    return scene


def show(scene):
    """Make ``scene`` the window's scene and (5.0+) the workspace's sequencer scene."""
    WINDOW.scene = scene
    if HAS_SEQUENCER_SCENE:
        WINDOW.workspace.sequencer_scene = scene


def add_movie_as_in_the_ui(scene, channel, frame_start):
    """Add the footage with the sequencer's own operator, as an artist does ("Adjust Playback Rate" on)."""
    show(scene)
    with bpy.context.temp_override(window=WINDOW, screen=WINDOW.screen, area=SEQ_AREA):
        result = bpy.ops.sequencer.movie_strip_add(
            filepath=FOOTAGE, frame_start=frame_start, channel=channel,
            sound=False, use_framerate=False,
        )
    assert result == {'FINISHED'}, result
    strip = scene.sequence_editor.active_strip
    assert strip is not None and strip.type == 'MOVIE', strip
    strip.name = "driving"
    return strip


def add_movie_from_python(scene, channel, frame_start, name="driving"):
    return scene.sequence_editor.strips.new_movie(name, FOOTAGE, channel, frame_start, fit_method='FIT')


def add_camera(scene, name="Cam"):
    data = bpy.data.cameras.new(name)
    camera = bpy.data.objects.new(name, data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    camera.location = (1.0, -8.0, 2.0)
    camera.rotation_euler = (1.4, 0.0, 0.2)
    return camera


def import_result(scene, undo=False, **props):
    """Run the operator as the interface does, with ``scene`` in the window."""
    show(scene)
    with bpy.context.temp_override(window=WINDOW):
        return bpy.ops.scail2.import_result('EXEC_DEFAULT', undo, **props)


def import_error(scene, **props):
    """Run an import that must fail; returns its error message."""
    try:
        result = import_result(scene, **props)
    except RuntimeError as ex:
        return str(ex)
    raise AssertionError("the import did not fail: {!r}".format(result))


def imported_strip(scene):
    strips = [s for s in scene.sequence_editor.strips if "scail2" in s]
    assert len(strips) == 1, [s.name for s in strips]
    return strips[0]


def imported_planes(scene):
    return [ob for ob in scene.objects if "scail2" in ob]


def strip_detail(strip):
    return {
        "name": strip.name,
        "channel": strip.channel,
        "frame_start": strip.frame_start,
        "frame_final_start": strip.frame_final_start,
        "frame_final_end": strip.frame_final_end,
        "frame_duration": strip.frame_duration,
        "fit_method_scale": [strip.transform.scale_x, strip.transform.scale_y],
        "files": {
            str(f): strip.strip_elem_from_frame(f).filename
            for f in range(strip.frame_final_start, strip.frame_final_end)
        },
        "props": {k: v for k, v in strip["scail2"].to_dict().items()},
        "select": strip.select,
        "active": strip.id_data.sequence_editor.active_strip == strip,
    }


def driving_detail(strip):
    return {
        "frame_start": strip.frame_start,
        "frame_duration": strip.frame_duration,
        "frame_final_start": strip.frame_final_start,
        "frame_final_end": strip.frame_final_end,
        "channel": strip.channel,
        "scale": [strip.transform.scale_x, strip.transform.scale_y],
    }


def texture_node(plane):
    nodes = plane.active_material.node_tree.nodes
    found = [n for n in nodes if n.type == 'TEX_IMAGE']
    assert len(found) == 1, [n.type for n in nodes]
    return found[0]


def plane_detail(plane):
    texture = texture_node(plane)
    user = texture.image_user
    image = texture.image
    tree = plane.active_material.node_tree
    folder = os.path.dirname(bpy.path.abspath(image.filepath))
    return {
        "name": plane.name,
        "parent": plane.parent.name if plane.parent else None,
        "image_source": image.source,
        "image_filepath": bpy.path.abspath(image.filepath),
        "image_alpha_mode": image.alpha_mode,
        "shown_in_solid_texture_mode": texture.show_texture,
        "frame_start": user.frame_start,
        "frame_duration": user.frame_duration,
        "frame_offset": user.frame_offset,
        "use_auto_refresh": user.use_auto_refresh,
        "use_cyclic": user.use_cyclic,
        # Where each sequence number points (links resolved).
        "sequence": {
            name: os.path.realpath(os.path.join(folder, name)) for name in sorted(os.listdir(folder))
        },
        "links": sorted("{:s}.{:s}->{:s}.{:s}".format(
            link.from_node.type, link.from_socket.identifier, link.to_node.type, link.to_socket.identifier)
            for link in tree.links),
        "surface_render_method": plane.active_material.surface_render_method,
        "visible_shadow": plane.visible_shadow,
        "props": plane["scail2"].to_dict(),
        "selected": plane.select_get(view_layer=plane.users_scene[0].view_layers[0]),
        "active": plane.users_scene[0].view_layers[0].objects.active == plane,
    }


# --- Rendering (small, on the CPU): which footage frame a strip shows, which colour a plane shows.

def render_pixels(scene, frame, tag):
    show(scene)
    scene.frame_set(frame)
    path = os.path.join(RENDERS, "{:s}_{:s}_{:d}.png".format(scene.name, tag, frame))
    scene.render.filepath = path
    bpy.ops.render.render(write_still=True)
    image = bpy.data.images.load(path)
    try:
        pixels = np.empty(len(image.pixels), dtype=np.float32)
        image.pixels.foreach_get(pixels)
    finally:
        bpy.data.images.remove(image)
    return pixels


_reference_frames = []


def reference_frames(count):
    """Renders of footage frames 0..count-1, shown one per scene frame, framed like the test scenes."""
    if len(_reference_frames) < count:
        scene = bpy.data.scenes.get("REF") or new_scene("REF", 16)
        if not scene.sequence_editor.strips:
            add_movie_from_python(scene, 1, 0)
        for index in range(len(_reference_frames), count):
            _reference_frames.append(render_pixels(scene, index, "ref"))
    return _reference_frames[:count]


def footage_frames_shown(scene, frames, count):
    """The footage frame the scene's sequencer shows at each of ``frames`` (muting imported strips)."""
    refs = reference_frames(count)
    imported = [s for s in scene.sequence_editor.strips if "scail2" in s]
    for strip in imported:
        strip.mute = True
    shown = []
    try:
        for frame in frames:
            pixels = render_pixels(scene, frame, "driving")
            errors = [float(np.abs(pixels - ref).mean()) for ref in refs]
            best = int(np.argmin(errors))
            shown.append([best, errors[best], sorted(errors)[1]])
    finally:
        for strip in imported:
            strip.mute = False
    return shown


def plane_colours(scene, frames):
    """The colour (0-255) at the centre of a Cycles render of the scene's camera view."""
    scene.render.engine = 'CYCLES'
    scene.cycles.device = 'CPU'
    scene.cycles.samples = 1
    scene.cycles.use_denoising = False
    scene.render.use_sequencer = False
    width, height = scene.render.resolution_x, scene.render.resolution_y
    colours = {}
    try:
        for frame in frames:
            pixels = render_pixels(scene, frame, "plane").reshape(height, width, 4)
            centre = pixels[height // 2 - 2:height // 2 + 2, width // 2 - 2:width // 2 + 2, :3]
            colours[str(frame)] = [round(float(v) * 255.0, 1) for v in centre.reshape(-1, 3).mean(axis=0)]
    finally:
        scene.render.use_sequencer = True
    return colours


# --- Snapshots, to compare a scene before and after.

def snapshot():
    scenes = {}
    for scene in bpy.data.scenes:
        editor = scene.sequence_editor
        scenes[scene.name] = {
            "editor": editor is not None,
            "strips": sorted(
                [s.name, s.type, s.channel, s.frame_final_start, s.frame_final_end, s.select]
                for s in (editor.strips_all if editor else [])
            ),
            "objects": sorted(ob.name for ob in scene.objects),
            "camera": scene.camera.name if scene.camera else None,
        }
    return {
        "scenes": scenes,
        "objects": sorted((ob.name, ob.parent.name if ob.parent else "") for ob in bpy.data.objects),
        "meshes": sorted(m.name for m in bpy.data.meshes),
        "materials": sorted(m.name for m in bpy.data.materials),
        "images": sorted(i.name for i in bpy.data.images),
        "movieclips": sorted(c.name for c in bpy.data.movieclips),
    }


def snapshot_diff(before, after):
    """What differs between two snapshots, for messages."""
    diff = {}
    for key in sorted(set(before) | set(after)):
        if key == "scenes":
            for name in sorted(set(before[key]) | set(after[key])):
                if before[key].get(name) != after[key].get(name):
                    diff["scene " + name] = [before[key].get(name), after[key].get(name)]
        elif before.get(key) != after.get(key):
            diff[key] = [before.get(key), after.get(key)]
    return diff


# --- The steps.

@step
def install():
    result = bpy.ops.extensions.package_install_files(filepath=ZIP_PATH, repo=REPO, enable_on_install=True)
    assert result == {'FINISHED'}, result
    assert PKG in bpy.context.preferences.addons, "not enabled"
    op = bpy.ops.scail2.import_result
    return {
        "idname": op.idname_py(),
        "options": sorted(bpy.types.SCAIL2_OT_import_result.bl_options),
        "properties": sorted(p.identifier for p in op.get_rna_type().properties if p.identifier != "rna_type"),
    }


def strip_case(name, fps, ui, job="full", channel=2, start=10, **props):
    scene = new_scene(name, fps)
    driving = add_movie_as_in_the_ui(scene, channel, start) if ui else add_movie_from_python(scene, channel, start)
    result = import_result(scene, filepath=JOBS[job], form='STRIP', **props)
    assert result == {'FINISHED'}, result
    return scene, {"driving": driving_detail(driving), "strip": strip_detail(imported_strip(scene))}


@step
def strip_24_ui():
    scene, detail = strip_case("S24_ui", 24, True)
    # What the driving strip really shows, rendered frame by frame in playback order.
    frames = list(range(10, 40))
    detail["shown"] = dict(zip(map(str, frames), footage_frames_shown(scene, frames, 24)))
    return detail


@step
def strip_30_ui():
    scene, detail = strip_case("S30_ui", 30, True, driving_strip="driving")
    frames = list(range(10, 40))
    detail["shown"] = dict(zip(map(str, frames), footage_frames_shown(scene, frames, 20)))
    return detail


@step
def strip_24_python():
    scene, detail = strip_case("S24_py", 24, False)
    frames = list(range(10, 30))
    detail["shown"] = dict(zip(map(str, frames), footage_frames_shown(scene, frames, 24)))
    return detail


@step
def strip_30_python():
    return strip_case("S30_py", 30, False)[1]


@step
def strip_part_of_clip():
    return strip_case("S24_part", 24, True, job="part")[1]


@step
def strip_clip_elsewhere():
    # The job's manifest names another copy of the clip: Blender's own frame count decides the rate.
    clips = len(bpy.data.movieclips)
    scene = new_scene("S24_else", 24)
    add_movie_as_in_the_ui(scene, 2, 10)
    result = import_result(scene, filepath=JOBS["elsewhere"], form='STRIP', driving_strip="driving")
    assert result == {'FINISHED'}, result
    assert len(bpy.data.movieclips) == clips, "the probe movie clip was left behind"
    return {"strip": strip_detail(imported_strip(scene))}


@step
def strip_trimmed_driving():
    scene = new_scene("S24_trim", 24)
    driving = add_movie_as_in_the_ui(scene, 2, 10)
    driving.frame_final_start = 30
    driving.frame_final_end = 60
    assert import_result(scene, filepath=JOBS["full"], form='STRIP') == {'FINISHED'}
    return {"driving": driving_detail(driving), "strip": strip_detail(imported_strip(scene))}


@step
def strip_channels():
    scene = new_scene("S24_chan", 24)
    add_movie_as_in_the_ui(scene, 2, 10)
    add_movie_from_python(scene, 3, 40, name="blocker_overlapping")  # frames 40-104: overlaps
    add_movie_from_python(scene, 4, 200, name="blocker_later")  # frames 200-264: does not
    ambiguous = import_error(scene, filepath=JOBS["full"], form='STRIP')
    assert import_result(scene, filepath=JOBS["full"], form='STRIP', driving_strip="driving") == {'FINISHED'}
    return {"ambiguous": ambiguous, "strip": strip_detail(imported_strip(scene))}


@step
def strip_without_driving():
    scene = new_scene("S24_free", 24)
    add_movie_from_python(scene, 5, 1, name="unrelated")
    # No driving strip (the job's clip is not in this scene): placed at frame 7, above everything.
    assert import_result(scene, filepath=JOBS["elsewhere"], form='STRIP', frame_start=7) == {'FINISHED'}
    return {"strip": strip_detail(imported_strip(scene))}


@step
def strip_at_current_frame():
    scene = new_scene("S24_now", 24)
    scene.frame_current = 33
    assert import_result(scene, filepath=JOBS["elsewhere"], form='STRIP') == {'FINISHED'}
    return {"strip": strip_detail(imported_strip(scene))}


@step
def invoke_and_draw():
    # Invoked with a manifest, the operator runs at once, placing the result at the current frame.
    scene = new_scene("S24_invoke", 24)
    scene.frame_current = 12
    show(scene)
    with bpy.context.temp_override(window=WINDOW):
        result = bpy.ops.scail2.import_result('INVOKE_DEFAULT', filepath=JOBS["elsewhere"], form='STRIP')
    assert result == {'FINISHED'}, result
    strip = imported_strip(scene)

    # Its redo panel draws only properties that exist.
    drawn = []

    class Layout:
        use_property_split = use_property_decorate = False

        def prop(self, data, name, **kwargs):
            assert name in data.bl_rna.properties, name
            drawn.append(name)

        def prop_search(self, data, name, search_data, search_name, **kwargs):
            assert name in data.bl_rna.properties, name
            assert search_name in search_data.bl_rna.properties, search_name
            drawn.append(name)

    class Operator:
        layout = Layout()

        def __init__(self, form):
            self.properties = bpy.context.window_manager.operator_properties_last("scail2.import_result")
            self.form = form

        def __getattr__(self, name):
            return getattr(self.properties, name)

    forms = {}
    for form in ('STRIP', 'PLANE', 'BOTH'):
        drawn.clear()
        with bpy.context.temp_override(window=WINDOW):
            bpy.types.SCAIL2_OT_import_result.draw(Operator(form), bpy.context)
        forms[form] = list(drawn)
    return {"frame_final_start": strip.frame_final_start, "drawn": forms}


@step
def plane_timed_to_driving():
    scene = new_scene("P24", 24)
    add_movie_as_in_the_ui(scene, 2, 10)
    add_camera(scene)
    assert import_result(scene, filepath=JOBS["full"], form='BOTH', distance=6.0) == {'FINISHED'}
    strip = imported_strip(scene)
    planes = imported_planes(scene)
    assert len(planes) == 1, planes
    detail = {"strip": strip_detail(strip), "plane": plane_detail(planes[0])}
    first, end = strip.frame_final_start, strip.frame_final_end
    frames = [first - 3, first, first + 1, first + 2, first + 3, first + 4, first + 50, end - 1, end + 5]
    detail["colours"] = plane_colours(scene, frames)
    # A second import with the same timing reuses the scene-rate folder.
    assert import_result(scene, filepath=JOBS["full"], form='PLANE', distance=6.0) == {'FINISHED'}
    detail["folders"] = sorted(os.listdir(os.path.join(os.path.dirname(JOBS["full"]), "scene_frames")))
    return detail


CAMERAS = {
    # name: (camera settings, scene resolution, pixel aspect, distance, fill mode)
    "persp_landscape_fill": ({}, (1920, 1080), (1, 1), 4.0, 'FILL'),
    "persp_landscape_fit": ({}, (1920, 1080), (1, 1), 4.0, 'FIT'),
    "persp_portrait_fit": ({"lens": 35.0}, (1080, 1920), (1, 1), 3.0, 'FIT'),
    "persp_portrait_fill": ({"lens": 35.0}, (1080, 1920), (1, 1), 3.0, 'FILL'),
    "persp_vertical_pixel_aspect": (
        {"sensor_fit": 'VERTICAL', "sensor_height": 20.0}, (1000, 1000), (2, 1), 5.0, 'FIT'),
    "persp_horizontal_shift": (
        {"sensor_fit": 'HORIZONTAL', "sensor_width": 30.0, "shift_x": 0.1, "shift_y": -0.2},
        (1280, 720), (1, 1), 7.0, 'FILL'),
    "ortho_fit": ({"type": 'ORTHO', "ortho_scale": 7.0}, (800, 600), (1, 1), 12.0, 'FIT'),
    "ortho_shift_fill": ({"type": 'ORTHO', "ortho_scale": 3.0, "shift_y": 0.25}, (600, 800), (1, 1), 2.0, 'FILL'),
    "scaled_camera": ({"scale": (2.0, 0.5, 3.0)}, (1920, 1080), (1, 1), 5.0, 'FIT'),
}


@step
def plane_framing():
    details = {}
    for name, (settings, resolution, pixel_aspect, distance, fill_mode) in CAMERAS.items():
        scene = new_scene("CAM_" + name, 24, resolution)
        scene.render.pixel_aspect_x, scene.render.pixel_aspect_y = pixel_aspect
        camera = add_camera(scene, name)
        settings = dict(settings)
        if "scale" in settings:
            camera.scale = settings.pop("scale")
        for key, value in settings.items():
            setattr(camera.data, key, value)
        bpy.context.view_layer.update()
        scene.frame_current = 5
        assert import_result(scene, filepath=JOBS["full"], form='PLANE', camera=name,
                             distance=distance, fill_mode=fill_mode) == {'FINISHED'}
        (plane,) = imported_planes(scene)
        show(scene)
        bpy.context.view_layer.update()
        depsgraph = bpy.context.evaluated_depsgraph_get()
        plane_eval = plane.evaluated_get(depsgraph)
        corners = [plane_eval.matrix_world @ v.co for v in plane.data.vertices]
        projected = [list(world_to_camera_view(scene, camera, co)) for co in corners]
        frame = [v.copy() for v in camera.data.view_frame(scene=scene)]
        # view_frame() is the frame at some depth: scaled to the plane's distance (ortho: any depth).
        factor = distance / -frame[0].z if camera.data.type == 'PERSP' else 1.0
        xs, ys = [v.x * factor for v in frame], [v.y * factor for v in frame]
        view = {
            "width": max(xs) - min(xs), "height": max(ys) - min(ys),
            "center_x": (max(xs) + min(xs)) / 2, "center_y": (max(ys) + min(ys)) / 2,
        }
        cam = camera.data
        details[name] = {
            "parent": plane.parent.name if plane.parent else None,
            "projected": projected,
            "world_edges": [(corners[1] - corners[0]).length, (corners[3] - corners[0]).length],
            "distance": distance,
            "fill_mode": fill_mode,
            "view_frame": view,
            "camera": {
                "ortho": cam.type == 'ORTHO', "lens": cam.lens, "ortho_scale": cam.ortho_scale,
                "sensor_width": cam.sensor_width, "sensor_height": cam.sensor_height,
                "sensor_fit": cam.sensor_fit, "resolution_x": resolution[0], "resolution_y": resolution[1],
                "pixel_aspect_x": pixel_aspect[0], "pixel_aspect_y": pixel_aspect[1],
                "shift_x": cam.shift_x, "shift_y": cam.shift_y,
            },
            "plane": plane_detail(plane),
        }
    return details


@step
def plane_alpha():
    scene = new_scene("ALPHA", 24)
    add_camera(scene)
    scene.frame_current = 1
    assert import_result(scene, filepath=JOBS["alpha"], form='PLANE', shading='SHADED') == {'FINISHED'}
    (with_alpha,) = imported_planes(scene)
    scene2 = new_scene("OPAQUE", 24)
    add_camera(scene2, "Cam2")
    assert import_result(scene2, filepath=JOBS["alpha"], form='PLANE', use_alpha=False) == {'FINISHED'}
    (without,) = imported_planes(scene2)
    return {"alpha": plane_detail(with_alpha), "no_alpha": plane_detail(without)}


@step
def failures_leave_scene_unchanged():
    scene = new_scene("FAIL", 24)
    add_movie_as_in_the_ui(scene, 2, 10)
    reversed_strip = add_movie_from_python(scene, 6, 300, name="reversed")
    reversed_strip.use_reverse_frames = True
    top = add_movie_from_python(scene, 128, 500, name="top")
    add_camera(scene)
    not_camera = bpy.data.objects.new("NotCam", None)
    scene.collection.objects.link(not_camera)
    cases = {
        "missing_frame": dict(filepath=JOBS["missing"], form='BOTH', driving_strip="driving"),
        "no_manifest": dict(filepath=os.path.join(WORK_DIR, "nowhere", "manifest.json"), form='STRIP'),
        "not_a_manifest": dict(filepath=JOBS["not_a_manifest"], form='STRIP'),
        "no_such_strip": dict(filepath=JOBS["full"], form='BOTH', driving_strip="nope"),
        "reversed_strip": dict(filepath=JOBS["full"], form='STRIP', driving_strip="reversed"),
        "no_free_channel": dict(filepath=JOBS["full"], form='BOTH', driving_strip="top"),
        "not_a_camera": dict(filepath=JOBS["full"], form='BOTH', driving_strip="driving", camera="NotCam"),
        "too_far": dict(filepath=JOBS["full"], form='BOTH', driving_strip="driving", distance=5000.0),
    }
    del top
    before = snapshot()
    errors = {}
    for name, props in cases.items():
        errors[name] = import_error(scene, **props)
        after = snapshot()
        assert after == before, "{:s} changed the scene: {!r}".format(name, snapshot_diff(before, after))
    # A failure half-way through creating (after the strip, image and material exist) undoes it all.
    module = sys.modules[PKG + ".runtime.result_create"]
    original = module._build_material

    def broken(*args, **kwargs):
        original(*args, **kwargs)
        raise RuntimeError("broken on purpose")

    module._build_material = broken
    try:
        errors["half_way"] = import_error(scene, filepath=JOBS["full"], form='BOTH', driving_strip="driving")
    finally:
        module._build_material = original
    after = snapshot()
    assert after == before, "half_way changed the scene: {!r}".format(snapshot_diff(before, after))
    return {
        "errors": errors,
        "missing_scene_frames": os.path.exists(os.path.join(os.path.dirname(JOBS["missing"]), "scene_frames")),
    }


@step
def undo_is_one_step():
    scene = new_scene("UNDO", 24)
    add_movie_as_in_the_ui(scene, 2, 10)
    add_camera(scene, "UndoCam")
    show(scene)
    with bpy.context.temp_override(window=WINDOW):
        bpy.ops.ed.undo_push(message="before import")
    before = snapshot()
    assert import_result(scene, undo=True, filepath=JOBS["full"], form='BOTH') == {'FINISHED'}
    after = snapshot()
    assert after != before
    with bpy.context.temp_override(window=WINDOW):
        assert bpy.ops.ed.undo() == {'FINISHED'}
    undone = snapshot()
    with bpy.context.temp_override(window=WINDOW):
        assert bpy.ops.ed.redo() == {'FINISHED'}
    redone = snapshot()
    return {
        "before": before, "after": after, "undone": undone, "redone": redone,
    }


@step
def viewport_hint():
    """The line an import adds when a 3D viewport's Solid shading would show the plane plain grey."""
    import types

    area = WINDOW.screen.areas[0]
    kept = area.type
    area.type = 'VIEW_3D'
    try:
        shading = area.spaces.active.shading
        hint = sys.modules[PKG + ".runtime.result_create"].viewport_hint
        context = types.SimpleNamespace(screen=WINDOW.screen)
        shading.type, shading.color_type = 'SOLID', 'MATERIAL'
        solid = hint(context)
        shading.color_type = 'TEXTURE'
        texture = hint(context)
        shading.type = 'MATERIAL'
        preview = hint(context)
    finally:
        area.type = kept
    return {"solid": solid, "texture": texture, "preview": preview}


@step
def disable():
    bpy.ops.preferences.addon_disable(module=PKG)
    assert PKG not in bpy.context.preferences.addons
    assert not hasattr(bpy.types, "SCAIL2_OT_import_result")


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1)
