"""Child-process script for test_sources.py: exports from real scenes with the real ``bpy``.

Run as ``python sources_script.py REPO OUT_DIR REPORT_JSON [STEP ...]`` with
``BLENDER_USER_RESOURCES`` pointing at an empty folder. The add-on package is
imported from REPO under the name ``scail2`` (no install needed). Each step
builds its own scene, runs, and records ``{"ok": bool, "detail": ...}`` in
REPORT_JSON; a failing step does not stop the others.
"""

import array
import faulthandler
import importlib.util
import json
import math
import os
import sys
import time
import traceback

REPO, OUT, REPORT_PATH, *ONLY = sys.argv[1:]
faulthandler.enable()
FOOTAGE = os.path.join(REPO, "tests", "fixtures", "footage", "scail_001_driving.mp4")

import bpy  # noqa: E402  (after the environment is set)
from bpy_extras.object_utils import world_to_camera_view  # noqa: E402

spec = importlib.util.spec_from_file_location(
    "scail2", os.path.join(REPO, "__init__.py"), submodule_search_locations=[REPO])
scail2 = importlib.util.module_from_spec(spec)
sys.modules["scail2"] = scail2
spec.loader.exec_module(scail2)
from scail2 import compat, protocol, sources  # noqa: E402
from scail2.core import pixels  # noqa: E402
from scail2.operators import inputs as export_inputs  # noqa: E402
from scail2.props import input_settings  # noqa: E402
from scail2.sources import render, sequencer  # noqa: E402

for cls in (*input_settings.classes, *export_inputs.classes):
    bpy.utils.register_class(cls)

report = {"blender_version": bpy.app.version_string, "footage": FOOTAGE}
BLUE, RED, GREEN = (0, 0, 255), (255, 0, 0), (0, 255, 0)
BLACK, WHITE = (0, 0, 0), (255, 255, 255)


def step(fn):
    if ONLY and fn.__name__ not in ONLY:
        return fn
    started = time.time()
    try:
        detail = fn()
        report[fn.__name__] = {"ok": True, "detail": detail}
    except BaseException:
        report[fn.__name__] = {"ok": False, "detail": traceback.format_exc()}
    report[fn.__name__]["seconds"] = round(time.time() - started, 2)
    return fn


# --- Helpers.

def out(*parts):
    path = os.path.join(OUT, *parts)
    os.makedirs(os.path.dirname(path), exist_ok=True)
    return path


def new_scene(name, fps=24, size=(2048, 1080), percent=5, shown=True):
    scene = bpy.data.scenes.new(name)
    if shown:
        # The window's scene, as where an artist works: Blender keeps its objects at its frame.
        bpy.context.window.scene = scene
    scene.render.fps, scene.render.fps_base = fps, 1.0
    scene.render.resolution_x, scene.render.resolution_y = size
    scene.render.resolution_percentage = percent
    scene.view_settings.view_transform = 'Standard'
    scene.render.dither_intensity = 0.0
    render.set_png_output(scene, 'RGB')
    return scene


def render_frame(scene, frame, path):
    scene.frame_current = frame
    scene.render.filepath = path
    with bpy.context.temp_override(scene=scene):
        bpy.ops.render.render(write_still=True)
    return render.read_pixels(path)


def rgb_at(pixels_, width, x, y):
    i = 4 * (y * width + x)
    return tuple(round(pixels_[i + k] * 255) for k in range(3))


def snapshot_rna(struct, skip=()):
    values = {}
    for prop in struct.bl_rna.properties:
        name = prop.identifier
        if name in skip or name == "rna_type" or prop.type in {'POINTER', 'COLLECTION'}:
            continue
        try:
            value = getattr(struct, name)
        except AttributeError:
            continue
        if hasattr(value, "__len__") and not isinstance(value, str):
            value = [round(v, 6) if isinstance(v, float) else v for v in value]
        elif isinstance(value, float):
            value = round(value, 6)
        elif isinstance(value, set):
            value = sorted(value)
        values[name] = value
    return values


def snapshot(scene):
    """Everything an export could change in the user's scene and data."""
    shot = {
        "render": snapshot_rna(scene.render),
        "image_settings": snapshot_rna(scene.render.image_settings),
        "display": snapshot_rna(scene.display),
        "shading": snapshot_rna(scene.display.shading),
        "view": snapshot_rna(scene.view_settings),
        "display_device": scene.display_settings.display_device,
        "scene": {k: v for k, v in snapshot_rna(scene).items() if k not in {"is_evaluated"}},
        "camera": scene.camera.name if scene.camera else None,
        "world": scene.world.name if scene.world else None,
        "world_color": [round(c, 6) for c in scene.world.color] if scene.world else None,
        "objects": {o.name: {"color": [round(c, 6) for c in o.color], "hide_render": o.hide_render,
                             "location": [round(c, 6) for c in o.location]} for o in scene.objects},
        "data": {kind: sorted(b.name for b in getattr(bpy.data, kind))
                 for kind in ("scenes", "worlds", "images", "movieclips", "masks", "objects", "collections")},
        "strips": {s.name: {"mute": s.mute, "blend_type": s.blend_type, "blend_alpha": round(s.blend_alpha, 6)}
                   for s in (scene.sequence_editor.strips_all if scene.sequence_editor else ())},
        "mask_layers": {m.name: [(layer.name, layer.hide_render) for layer in m.layers] for m in bpy.data.masks},
    }
    return shot


def diff(before, after, path=""):
    if isinstance(before, dict) and isinstance(after, dict):
        found = []
        for key in sorted(set(before) | set(after)):
            found += diff(before.get(key), after.get(key), path + "." + str(key))
        return found
    return [] if before == after else ["{:s}: {!r} -> {!r}".format(path, before, after)]


def footage_reference_frames(count=65):
    """The footage's frames as the sequencer renders them: scene frame k shows footage frame k."""
    scene = new_scene("footage frames", shown=False)
    scene.sequence_editor_create().strips.new_movie("all", FOOTAGE, 1, 0)
    frames = [render_frame(scene, k, out("refs", "ref_{:03d}.png".format(k)))[0].tobytes() for k in range(count)]
    bpy.data.scenes.remove(scene)
    return frames


REFS = None


def refs():
    global REFS
    if REFS is None:
        REFS = footage_reference_frames()
    return REFS


def which_footage_frames(scene, frames, tag):
    """For each scene frame, the footage frames whose pixels it renders identically (normally one)."""
    found = {}
    for frame in frames:
        pixels_ = render_frame(scene, frame, out(tag, "shown_{:04d}.png".format(frame)))[0].tobytes()
        found[frame] = [k for k, ref in enumerate(refs()) if ref == pixels_]
    return found


def new_effect(scene, name, kind, channel, start, end):
    # StripsTopLevel.new_effect takes frame_end in 4.5 and length in 5.0.
    span = {"length": end - start} if bpy.app.version >= (5, 0, 0) else {"frame_end": end}
    return scene.sequence_editor.strips.new_effect(name, kind, channel, frame_start=start, **span)


def show_another_scene():
    """Show an empty scene in the window: exports must work on scenes the window does not show
    (in 5.0 the sequencer's scene need not be the window's)."""
    bpy.context.window.scene = bpy.data.scenes.new("elsewhere")


def trimmed_movie_scene(name, shown=True):
    """The 16 fps footage in a 24 fps scene: content from frame 10, 5 footage frames cut at the start
    and 3 at the end (hard trims), the handles moved in by 7 and 6 frames (soft trims)."""
    scene = new_scene(name, shown=shown)
    strip = scene.sequence_editor_create().strips.new_movie("dance", FOOTAGE, 2, 10)
    strip.animation_offset_start = 5
    strip.animation_offset_end = 3
    left, right = compat.strip_handles(strip)
    strip.frame_final_start = left + 7
    strip.frame_final_end = right - 6
    return scene, strip


def check_clip_against_timeline(scene, clip, tag):
    """Render the sequencer at every scene frame of the clip; the footage frame it shows must be the exported one."""
    frames = range(clip.scene_frame_start, clip.scene_frame_end)
    shown = which_footage_frames(scene, frames, tag)
    bad = {f: (shown[f], clip.frame_start + clip.exported_at(f)) for f in frames
           if shown[f] != [clip.frame_start + clip.exported_at(f)]}
    return {"frames_checked": len(frames), "mismatches": bad}


# --- Steps.

@step
def export_folders_keep_other_files():
    """An export never deletes a file it did not write: someone's frame_*.png is refused, ours replaced."""
    theirs = out("theirs", "driving")
    pixels.write_png(os.path.join(theirs, "frame_000000.png"), 8, 8, bytes(8 * 8 * 3))
    try:
        render.prepare_folder(theirs)
        refused = ""
    except sources.ExportError as ex:
        refused = str(ex)
    ours = out("ours", "driving")
    render.prepare_folder(ours)
    pixels.write_png(os.path.join(ours, "frame_000000.png"), 8, 8, bytes(8 * 8 * 3))
    render.prepare_folder(ours)
    return {"refused": refused, "theirs_kept": os.listdir(theirs), "ours_left": sorted(os.listdir(ours))}


@step
def movie_strip_direct():
    scene, strip = trimmed_movie_scene("movie direct")
    before = snapshot(scene)
    clip = sources.export_strip(scene, strip, out("movie_direct", "driving"))
    after = snapshot(scene)
    check = check_clip_against_timeline(scene, clip, "movie_direct")
    # The exported frames as the backend numbers them (from the file's first frame).
    return {
        "clip": clip.to_dict(), "check": check, "handles": list(compat.strip_handles(strip)),
        "changed": diff(before, after), "wrote": os.path.exists(out("movie_direct", "driving")),
    }


@step
def movie_strip_baked():
    scene, strip = trimmed_movie_scene("movie baked")
    left, right = compat.strip_handles(strip)
    direct = sources.export_strip(scene, strip, out("movie_baked", "direct"))
    # An adjustment layer without modifiers: it changes no pixel, but the strip must be rendered.
    adjustment = new_effect(scene, "adjust", 'ADJUSTMENT', 3, left, right)
    # A strip that is not the footage (muted in the export, so it must not show up in it).
    new_effect(scene, "red", 'COLOR', 1, left, right).color = (1, 0, 0)
    before = snapshot(scene)
    baked = sources.export_strip(scene, strip, out("movie_baked", "driving"), max_size=0)
    after = snapshot(scene)
    # Every baked frame is the footage frame that the direct export maps it to.
    exported = []
    for path in baked.files:
        pix = render.read_pixels(path)[0].tobytes()
        exported.append([k for k, ref in enumerate(refs()) if ref == pix])
    expected = [[direct.frame_start + direct.exported_at(f)] for f in baked.scene_frames]
    return {
        "direct": direct.to_dict(), "baked": baked.to_dict(), "adjustment": adjustment.name,
        "exported": exported, "expected": expected, "changed": diff(before, after),
        "listing": sorted(n for n in os.listdir(baked.path) if not n.startswith(".")),  # the export marker aside
    }


@step
def movie_strip_adjusted_rate():
    # A strip added in the interface plays the footage at its own rate ("Adjust Playback Rate").
    # Only 4.5 runs the add-movie operator without a window system; 5.0 crashes in it.
    if bpy.app.version >= (5, 0, 0):
        return {"skipped": "the movie_strip_add operator needs a real sequencer editor in 5.0"}
    scene = new_scene("movie adjusted rate")
    scene.sequence_editor_create()
    window = bpy.context.window
    area = next(a for a in window.screen.areas if a.type == 'DOPESHEET_EDITOR')
    area.type = 'SEQUENCE_EDITOR'
    region = next(r for r in area.regions if r.type == 'WINDOW')
    with bpy.context.temp_override(window=window, area=area, region=region, scene=scene):
        bpy.ops.sequencer.movie_strip_add(
            filepath=FOOTAGE, frame_start=10, channel=1, adjust_playback_rate=True, sound=False,
            use_framerate=False)
    strip = scene.sequence_editor.strips[0]
    strip.animation_offset_start = 5
    left, right = compat.strip_handles(strip)
    strip.frame_final_start = left + 7
    strip.frame_final_end = right - 6
    clip = sources.export_strip(scene, strip, out("movie_rate", "driving"))
    check = check_clip_against_timeline(scene, clip, "movie_rate")
    return {"clip": clip.to_dict(), "check": check, "content_duration": compat.strip_content_duration(strip)}


@step
def meta_and_range():
    scene, strip = trimmed_movie_scene("meta and range")
    left, right = compat.strip_handles(strip)
    direct = sources.export_strip(scene, strip, out("meta_range", "direct"))
    expected = {f: [direct.frame_start + direct.exported_at(f)] for f in range(left, right)}
    # The sequencer's output over a range reaching past the strip: black there.
    output = sources.export_sequencer_range(scene, left - 2, left + 2, out("meta_range", "range"), max_size=0)
    black = [not any(render.read_pixels(path)[0][0::4]) and not any(render.read_pixels(path)[0][1::4])
             for path in output.files[:2]]
    in_range = [[k for k, ref in enumerate(refs()) if ref == render.read_pixels(path)[0].tobytes()]
                for path in output.files[2:]]
    # The movie strip inside a meta strip.
    for other in scene.sequence_editor.strips_all:
        other.select = other == strip
    meta = scene.sequence_editor.strips.new_meta("meta", 4, left)
    strip.move_to_meta(meta)
    meta.frame_final_start, meta.frame_final_end = left, right
    meta_handles = list(compat.strip_handles(meta))
    before = snapshot(scene)
    baked = sources.export_strip(scene, meta, out("meta_range", "meta"), max_size=0)
    after = snapshot(scene)
    shown = {f: [k for k, ref in enumerate(refs())
                 if ref == render.read_pixels(baked.files[baked.exported_at(f)])[0].tobytes()]
             for f in range(baked.scene_frame_start, baked.scene_frame_end)}
    timeline = which_footage_frames(scene, range(baked.scene_frame_start, baked.scene_frame_end), "meta_range")
    return {
        "range": output.to_dict(), "range_black": black, "range_in": in_range,
        "range_expected": [expected[f] for f in (left, left + 1, left + 2)],
        "meta": baked.to_dict(), "meta_shown": shown, "meta_timeline": timeline, "changed": diff(before, after),
        "inner_reasons": sources.bake_reasons(scene, strip), "meta_handles": meta_handles,
    }


@step
def image_strip_direct():
    scene = new_scene("images", size=(32, 24), percent=100)
    folder = out("images", "source")
    names = []
    for i in range(12):
        name = "shot_{:02d}.png".format(i + 1)
        pixels.write_png(os.path.join(folder, name), 32, 24, bytes((i * 20, 255 - i * 20, 7)) * (32 * 24))
        names.append(name)
    strip = scene.sequence_editor_create().strips.new_image("shots", os.path.join(folder, names[0]), 1, 3)
    for name in names[1:]:
        strip.elements.append(name)
    strip.animation_offset_start = 2
    left, right = compat.strip_handles(strip)
    strip.frame_final_start = left + 3
    strip.frame_final_end = right - 2
    clip = sources.export_strip(scene, strip, out("images", "driving"))
    expected = {f: strip.strip_elem_from_frame(f).filename for f in range(*compat.strip_handles(strip))}
    got = {f: os.path.basename(clip.files[clip.frame_start + clip.exported_at(f)])
           for f in range(clip.scene_frame_start, clip.scene_frame_end)}
    # A stray image in the folder: the strip's files are linked into a folder of their own.
    pixels.write_png(os.path.join(folder, "aaa_stray.png"), 32, 24, bytes(32 * 24 * 3))
    linked = sources.export_strip(scene, strip, out("images", "linked"))
    linked_names = [os.path.basename(p) for p in linked.files]
    same_bytes = all(
        open(a, "rb").read() == open(os.path.join(folder, n), "rb").read()
        for a, n in zip(linked.files, names))
    return {
        "clip": clip.to_dict(), "expected": expected, "got": got, "folder": folder,
        "linked": linked.to_dict(), "linked_names": linked_names, "linked_same_bytes": same_bytes,
        "linked_listing": sequencer.folder_listing(linked.path),
    }


def two_character_scene(name):
    """A camera looking at a cube (identity 1, as an object) and a sphere (identity 2, through its
    collection), both moving over frames 1-3, in front of an unassigned back wall."""
    scene = new_scene(name, size=(96, 64), percent=100)
    scene.frame_start, scene.frame_end = 1, 3
    camera = bpy.data.objects.new("Cam", bpy.data.cameras.new("Cam"))
    scene.collection.objects.link(camera)
    camera.location = (0.0, -10.0, 0.0)
    camera.rotation_euler = (math.pi / 2, 0.0, 0.0)
    scene.camera = camera

    def mesh_object(obj_name, verts, faces, collection):
        mesh = bpy.data.meshes.new(obj_name)
        mesh.from_pydata(verts, [], faces)
        obj = bpy.data.objects.new(obj_name, mesh)
        collection.objects.link(obj)
        return obj

    def box(obj_name, size, collection):
        s = size / 2
        verts = [(x, y, z) for x in (-s, s) for y in (-s, s) for z in (-s, s)]
        faces = [(0, 1, 3, 2), (4, 6, 7, 5), (0, 4, 5, 1), (2, 3, 7, 6), (0, 2, 6, 4), (1, 5, 7, 3)]
        return mesh_object(obj_name, verts, faces, collection)

    cube = box("Hero", 1.6, scene.collection)
    crowd = bpy.data.collections.new("Crowd")
    scene.collection.children.link(crowd)
    sphere = box("Sidekick", 1.4, crowd)  # a box too: flat colours do not care about the shape
    wall = mesh_object("Wall", [(-20, 5, -20), (20, 5, -20), (20, 5, 20), (-20, 5, 20)], [(0, 1, 2, 3)],
                       scene.collection)
    wall.color = (0.3, 0.6, 0.9, 1.0)
    cube.color = (0.2, 0.8, 0.2, 1.0)
    for frame, dx in ((1, 0.0), (3, 0.6)):
        cube.location = (-2.2 + dx, 0.0, 0.0)
        sphere.location = (2.2 - dx, 0.0, 0.3)
        cube.keyframe_insert("location", frame=frame)
        sphere.keyframe_insert("location", frame=frame)
    settings = input_settings.get_settings(scene)
    item = settings.identities.add()
    item.identity, item.target, item.object = 1, 'OBJECT', cube
    item = settings.identities.add()
    item.identity, item.target, item.collection = 2, 'COLLECTION', crowd
    scene.frame_set(1)
    return scene, camera, cube, sphere, wall


@step
def scene_strip():
    shot, camera, cube, _sphere, _wall = two_character_scene("shot")
    shot.render.engine = 'BLENDER_WORKBENCH'
    edit = new_scene("edit", size=(96, 64), percent=100)
    strip = edit.sequence_editor_create().strips.new_scene("shot", shot, 1, 11)
    reasons = sources.bake_reasons(edit, strip)
    clip = sources.export_strip(edit, strip, out("scene_strip", "driving"), max_size=0)
    frames = [render.read_pixels(path)[0].tobytes() for path in clip.files]
    return {"clip": clip.to_dict(), "reasons": reasons, "distinct": len(set(frames)),
            "nonblack": [any(f) for f in frames]}


def projected(scene, camera, obj, frame, width, height):
    scene.frame_set(frame)
    x, y, _z = world_to_camera_view(scene, camera, obj.matrix_world.translation)
    return int(x * width), int(y * height)


def mask_frames_report(scene, camera, clip, objects, background):
    frames = []
    for i, frame in enumerate(clip.scene_frames):
        path = clip.files[clip.frame_start + i]
        pix, width, height = render.read_pixels(path)
        counts = pixels.classify(pix)
        at = {name: rgb_at(pix, width, *projected(scene, camera, obj, frame, width, height))
              for name, obj in objects.items()}
        frames.append({
            "frame": frame, "exact": counts["exact"], "identities": counts["identities"],
            "black": counts["black"], "white": counts["white"], "at": at,
            "corner": rgb_at(pix, width, 0, 0), "size": [width, height],
        })
    return frames


@step
def identity_masks():
    scene, camera, cube, sphere, wall = two_character_scene("two characters")
    objects = {"Hero": cube, "Sidekick": sphere}
    before = snapshot(scene)
    driving = sources.render_camera_clip(scene, camera, 1, 3, out("identities", "driving"), engine='WORKBENCH')
    animate = sources.render_driving_masks(scene, camera, driving, out("identities", "mask_animate"), "animate")
    replace = sources.render_driving_masks(scene, camera, driving, out("identities", "mask_replace"), "replace")
    reference = sources.render_reference(scene, camera, out("identities", "reference"), "animate",
                                         engine='WORKBENCH', frame=2)
    after = snapshot(scene)
    ref_mask, width, height = render.read_pixels(reference.mask_path)
    ref_counts = pixels.classify(ref_mask)
    return {
        "driving": driving.to_dict(),
        "animate": animate.to_dict(), "replace": replace.to_dict(),
        "animate_frames": mask_frames_report(scene, camera, animate, objects, BLACK),
        "replace_frames": mask_frames_report(scene, camera, replace, objects, WHITE),
        "reference": reference.to_dict(),
        "reference_mask": {"exact": ref_counts["exact"], "identities": ref_counts["identities"],
                           "white": ref_counts["white"], "black": ref_counts["black"],
                           "corner": rgb_at(ref_mask, width, 0, 0),
                           "at": {name: rgb_at(ref_mask, width, *projected(scene, camera, obj, 2, width, height))
                                  for name, obj in objects.items()}},
        "changed": diff(before, after),
        "check": sources.check_identities({"driving_mask": animate.to_dict(), "reference": reference.to_dict()}),
    }


@step
def reference_render_alpha():
    scene, camera, cube, sphere, wall = two_character_scene("reference alpha")
    wall.hide_render = True  # nothing behind the characters: the background is transparent
    before = snapshot(scene)
    still = sources.render_reference(scene, camera, out("reference_alpha", "reference"), "replace",
                                     engine='WORKBENCH', frame=1)
    after = snapshot(scene)
    pix, width, height = render.read_pixels(still.path)
    hero = projected(scene, camera, cube, 1, width, height)
    mask, _w, _h = render.read_pixels(still.mask_path)
    return {
        "still": still.to_dict(), "alphas": sorted({round(v, 3) for v in pix[3::4]}),
        "alpha_at_hero": round(pix[4 * (hero[1] * width + hero[0]) + 3], 3), "alpha_corner": round(pix[3], 3),
        "mask_corner": rgb_at(mask, width, 0, 0), "mask_at_hero": rgb_at(mask, width, *hero),
        "changed": diff(before, after),
    }


def two_layer_mask():
    mask = bpy.data.masks.new("Characters")

    def square(layer, x0, y0, x1, y1):
        spline = layer.splines.new()
        spline.points.add(4)
        for point, co in zip(spline.points, ((x0, y0), (x1, y0), (x1, y1), (x0, y1))):
            point.co = co
            point.handle_left_type = point.handle_right_type = 'VECTOR'
        spline.use_cyclic = True

    square(mask.layers.new(name="first"), 0.05, 0.3, 0.45, 0.7)
    square(mask.layers.new(name="second"), 0.55, 0.3, 0.95, 0.7)
    return mask


@step
def mask_strip():
    show_another_scene()
    scene, strip = trimmed_movie_scene("mask strip", shown=False)
    driving = sources.export_strip(scene, strip, out("mask_strip", "driving"))
    mask = two_layer_mask()
    left, right = compat.strip_handles(strip)
    mask_strip_ = scene.sequence_editor.strips.new_mask("roto", mask, 5, left)
    mask_strip_.frame_final_end = right
    before = snapshot(scene)
    animate = sources.export_mask_strip(scene, mask_strip_, driving, out("mask_strip", "animate"), "animate",
                                        max_size=96)
    replace = sources.export_mask_strip(scene, mask_strip_, driving, out("mask_strip", "replace"), "replace",
                                        max_size=96)
    after = snapshot(scene)
    as_file = sources.export_mask_file(animate.path, driving)
    try:
        sources.export_mask_file(animate.path, sources.export_strip(
            scene, scene.sequence_editor.strips_all["dance"], out("mask_strip", "baked"), bake=True, max_size=64))
        mismatch = None
    except sources.ExportError as ex:
        mismatch = str(ex)

    def look(clip, index):
        pix, width, height = render.read_pixels(clip.files[index])
        counts = pixels.classify(pix)
        return {"exact": counts["exact"], "identities": counts["identities"], "size": [width, height],
                "left": rgb_at(pix, width, width // 4, height // 2),
                "right": rgb_at(pix, width, 3 * width // 4, height // 2),
                "corner": rgb_at(pix, width, 0, 0)}

    return {
        "driving": driving.to_dict(), "animate": animate.to_dict(), "replace": replace.to_dict(),
        "animate_first": look(animate, animate.frame_start), "animate_last": look(animate, animate.frame_end - 1),
        "animate_pad": look(animate, 0), "replace_first": look(replace, replace.frame_start),
        "listing": sequencer.folder_listing(animate.path), "changed": diff(before, after),
        "as_file": as_file.to_dict(), "mismatch": mismatch,
    }


@step
def references():
    show_another_scene()
    # A generated image with a transparent half.
    image = bpy.data.images.new("Drawn", 16, 8, alpha=True)
    data = array.array('f', [1.0, 0.5, 0.0, 1.0] * (16 * 4) + [0.0, 0.0, 0.0, 0.0] * (16 * 4))
    image.pixels.foreach_set(data)
    from_image = sources.reference_from_image(image, out("references", "image"))
    pix, width, height = render.read_pixels(from_image.path)
    from_file = sources.reference_from_file(os.path.join(os.path.dirname(FOOTAGE), "scail_001_ref.jpg"))
    # A strip's frame: an image strip's own file; a movie strip's picture rendered.
    edit = bpy.data.scenes.new("reference strips")
    edit.render.resolution_x, edit.render.resolution_y = 2048, 1080
    edit.render.resolution_percentage = 5
    folder = out("references", "shots", "x")[:-2]
    pixels.write_png(os.path.join(folder, "still_1.png"), 8, 8, bytes((9, 99, 199, 255)) * 64, channels=4)
    pixels.write_png(os.path.join(folder, "still_2.png"), 8, 8, bytes((9, 99, 199, 0)) * 64, channels=4)
    images = edit.sequence_editor_create().strips.new_image("stills", os.path.join(folder, "still_1.png"), 1, 1)
    images.elements.append("still_2.png")
    from_image_strip = sources.reference_from_strip(edit, images, 2, out("references", "from_images"))
    movie = edit.sequence_editor.strips.new_movie("movie", FOOTAGE, 2, 1)
    from_movie_strip = sources.reference_from_strip(edit, movie, 5, out("references", "from_movie"), max_size=0)
    movie_pixels = render.read_pixels(from_movie_strip.path)[0]
    movie_rgb = [[round(v * 255) for v in movie_pixels[i:i + 3]] for i in range(0, len(movie_pixels), 4)]
    ref_pixels = render.read_pixels(out("refs", "ref_{:03d}.png".format(4)))[0] if refs() else None
    ref_rgb = [[round(v * 255) for v in ref_pixels[i:i + 3]] for i in range(0, len(ref_pixels), 4)]
    try:
        sources.reference_from_file(out("references", "missing.png"))
        missing = None
    except sources.ExportError as ex:
        missing = str(ex)
    return {
        "image": from_image.to_dict(), "image_alpha": sorted({round(v, 3) for v in pix[3::4]}),
        "image_size": [width, height], "image_bottom": rgb_at(pix, width, 0, 0),
        "file": from_file.to_dict(), "missing": missing,
        "from_image_strip": from_image_strip.to_dict(), "from_movie_strip": from_movie_strip.to_dict(),
        "movie_strip_is_footage_frame_4": movie_rgb == ref_rgb,
    }


@step
def operators_and_inputs():
    scene, camera, cube, sphere, _wall = two_character_scene("operators")
    window = bpy.context.window
    old_scene = window.scene
    window.scene = scene
    try:
        settings = input_settings.get_settings(scene)
        settings.identities.clear()
        settings.inputs_dir = out("operators", "inputs")
        settings.driving_source = 'CAMERA'
        settings.driving_camera = camera
        settings.mask_source = 'IDENTITIES'
        settings.reference_source = 'CAMERA'
        settings.reference_engine = 'WORKBENCH'
        settings.max_size = 96
        view_layer = scene.view_layers[0]
        view_layer.objects.active = cube
        for obj in scene.objects:
            obj.select_set(obj == cube, view_layer=view_layer)
        crowd = sphere.users_collection[0]
        view_layer.active_layer_collection = view_layer.layer_collection.children[crowd.name]
        with bpy.context.temp_override(scene=scene, view_layer=view_layer):
            assert bpy.ops.scail2.assign_identity(identity=1) == {'FINISHED'}
            assert bpy.ops.scail2.assign_identity(identity=3, target='COLLECTION') == {'FINISHED'}
        assignment = [(i.identity, i.target, (i.object or i.collection).name) for i in settings.identities]
        results = {
            "driving": sorted(bpy.ops.scail2.export_driving()),
            "masks": sorted(bpy.ops.scail2.export_masks()),
            "reference": sorted(bpy.ops.scail2.export_reference()),
        }
        inputs = sources.load_inputs(settings.inputs_dir)
        fields = sources.job_fields(inputs)
        spec = protocol.JobSpec(**fields).validate()
        check = settings.last_check
        # Identity 3 taken off the reference camera's view: the check must say so.
        sphere.hide_render = True
        try:
            bpy.ops.scail2.export_reference()
        finally:
            sphere.hide_render = False
        warned = settings.last_check
        settings.mode = 'replace'
        bpy.ops.scail2.check_identities()
        other_mode = settings.last_check
        settings.mode = 'animate'
        bpy.ops.scail2.remove_identity(index=0)
        return {
            "assignment": assignment, "results": results, "fields": fields, "spec_driving": spec.driving,
            "check": check, "warned": warned, "other_mode": other_mode, "left": len(settings.identities),
            "inputs_keys": sorted(inputs),
        }
    finally:
        window.scene = old_scene


# Registered classes left at exit hang the 4.5 bpy module's shutdown.
for cls in reversed((*input_settings.classes, *export_inputs.classes)):
    bpy.utils.unregister_class(cls)

with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1, default=str)
