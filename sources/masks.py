# SPDX-License-Identifier: GPL-3.0-or-later
"""Colour masks: rendered by Blender from assigned objects, from mask strips, or given as a file.

Identity ``i`` is drawn in palette colour ``i`` (1 blue, 2 red, 3 green,
4 magenta, 5 cyan, 6 yellow) on the mode's background: a driving mask on
black for animation and on white for replacement, a reference mask the other
way round (see :func:`~.clip.backgrounds`).

Every driving mask is *aligned* with its driving clip: one mask file per frame
at the driving path, whatever range of it the job reads, as the backend wants
(a movie read directly from footage frame 40 on gets 40 blank masks first:
hard links to one small file).
"""

__all__ = (
    "NO_MASK",
    "check_identities",
    "driving_frame_size",
    "export_mask_file",
    "export_mask_strip",
    "iter_export_mask_strip",
    "iter_render_driving_masks",
    "preview_mask_strip",
    "render_driving_masks",
    "render_identity_frames",
    "render_reference_mask",
)

import os

import bpy

from .. import compat
from ..core.inputs import PALETTE, ExportError, ExportedClip, backgrounds, identity_check, identity_names
from .sequencer import animated_paths, folder_listing, sequencer_copy
from ..core.pixels import classify, compose_layers, coverage, fill, interleave, write_png
from .render import (
    DEFAULT_MAX_SIZE,
    Restorer,
    abspath,
    drain,
    image_info,
    movie_info,
    neutral_colour,
    output_size,
    prepare_folder,
    read_pixels,
    render_still,
    set_png_output,
    temporary_scene,
)
from ..props.input_settings import assigned_objects

MASK_NAME = "mask_{:06d}.png"
BLANK_NAME = ".blank.png"
NO_MASK = "No mask: the backend uses the whole frame as identity 1"
MOVIE_EXTENSIONS = frozenset({".mp4", ".m4v", ".mov", ".mkv", ".avi", ".webm"})


def _unit(rgb):
    return tuple(c / 255.0 for c in rgb)


# --------------------------------------------------------------------------------------------
# Alignment with the driving clip.

def _fit(width, height, max_size):
    scale = min(1.0, max_size / max(width, height)) if max_size else 1.0
    return max(2, round(width * scale)), max(2, round(height * scale))


def driving_frame_size(driving, max_size=DEFAULT_MAX_SIZE):
    """``(width, height)`` for masks of ``driving``: its own aspect, the longest side at most ``max_size``."""
    if driving.kind == "movie":
        _frames, width, height = movie_info(driving.path)
    else:
        width, height, _alpha = image_info(driving.files[driving.frame_start])
    return _fit(width, height, max_size)


def _pad(folder, driving, background, width, height):
    """Blank masks for the driving frames a job does not read, so the mask has as many frames as the clip."""
    padding = [*range(0, driving.frame_start), *range(driving.frame_end, driving.frame_count)]
    if not padding:
        return
    blank = os.path.join(folder, BLANK_NAME)  # hidden: a job never reads it as a frame
    write_png(blank, width, height, bytes(background) * (width * height))
    for index in padding:
        target = os.path.join(folder, MASK_NAME.format(index))
        try:
            os.link(blank, target)
        except OSError:
            write_png(target, width, height, bytes(background) * (width * height))


def _aligned_clip(driving, folder, identities, source, note, baked=True):
    files = [os.path.join(folder, MASK_NAME.format(i)) for i in range(driving.frame_count)]
    return ExportedClip(
        path=folder, kind="sequence", fps=driving.fps,
        frame_start=driving.frame_start, frame_end=driving.frame_end, frame_count=driving.frame_count,
        scene_frames=list(driving.scene_frames), scene_frame_start=driving.scene_frame_start,
        shown=list(driving.shown), scene_fps=driving.scene_fps, files=files, baked=baked,
        source=source, note=note, identities=sorted(identities),
    )


# --------------------------------------------------------------------------------------------
# Assigned objects, rendered flat (Workbench).

def _flat_workbench(copy, camera, width, height, background, made):
    """Set the scene copy up to draw every object in its flat object colour, without anti-aliasing."""
    render = copy.render
    render.engine = 'BLENDER_WORKBENCH'
    render.resolution_x, render.resolution_y = width, height
    render.use_sequencer = False
    render.film_transparent = False
    render.use_motion_blur = False
    copy.camera = camera
    display = copy.display
    display.render_aa = 'OFF'  # no edge blends between colours
    shading = display.shading
    shading.light = 'FLAT'
    shading.color_type = 'OBJECT'
    shading.show_shadows = False
    shading.show_cavity = False
    shading.show_object_outline = False
    shading.show_xray = False
    shading.use_dof = False
    shading.show_backface_culling = False
    world = bpy.data.worlds.new("SCAIL2 mask background")
    made.append(world)
    world.color = _unit(background)
    copy.world = world
    neutral_colour(copy)
    set_png_output(copy, 'RGB')


def render_identity_frames(scene, camera, frames, paths, background, **options):
    """Render the identity assignment of ``scene`` through ``camera`` at each scene frame to its path
    (:func:`iter_render_identity_frames`); ``(counts, warnings)``."""
    return drain(iter_render_identity_frames(scene, camera, frames, paths, background, **options))


def iter_render_identity_frames(scene, camera, frames, paths, background, *, size=None, max_size=DEFAULT_MAX_SIZE):
    """Render the identity assignment of ``scene`` through ``camera`` at each scene frame to its path, a frame
    at a time (see ``render.drain``).

    Returns ``(counts, warnings)``: per frame, :func:`~.pixels.classify`'s
    result for what was written. Object colours are put back afterwards.
    """
    owners, warnings = assigned_objects(scene)
    if not owners:
        raise ExportError("Assign objects or collections to identities first")
    if camera is None or camera.type != 'CAMERA':
        raise ExportError("Choose a camera to render the masks through")
    width, height = output_size(scene, max_size, size)
    counts = []
    with temporary_scene(scene) as (copy, made), Restorer() as restorer:
        _flat_workbench(copy, camera, width, height, background, made)
        colours = {}
        for obj in _rendered_objects(copy, owners):
            identity = owners.get(obj)
            colours[obj] = (*_unit(PALETTE[identity - 1] if identity else background), 1.0)
            restorer.set(obj, "color", colours[obj])
        animated = sorted(obj.name for obj in colours if "color" in animated_paths(obj))
        if animated:
            warnings.append("The object colour of {:s} is animated; the mask may show it".format(animated[0]))
        for frame, path in zip(frames, paths, strict=True):
            copy.frame_current = frame
            render_still(copy, path)
            pixels, _w, _h = read_pixels(path)
            counts.append(classify(pixels))
            yield len(counts), len(paths)
    not_exact = sum(1 for c in counts if not c["exact"])
    if not_exact:
        warnings.append("{:d} mask frames have colours between the palette's".format(not_exact))
    return counts, warnings


def _rendered_objects(scene, owners):
    """The scene's objects, the objects of the collections they instance, and the assigned objects."""
    found, seen = set(owners), set()
    todo = [scene.collection]
    while todo:
        collection = todo.pop()
        if collection in seen:
            continue
        seen.add(collection)
        todo.extend(collection.children)
        for obj in collection.objects:
            found.add(obj)
            if obj.instance_type == 'COLLECTION' and obj.instance_collection is not None:
                todo.append(obj.instance_collection)
    return found


def render_driving_masks(scene, camera, driving, folder, mode, **options):
    """The driving mask for ``driving``, rendered from the assigned identities (:func:`iter_render_driving_masks`)."""
    return drain(iter_render_driving_masks(scene, camera, driving, folder, mode, **options))


def iter_render_driving_masks(scene, camera, driving, folder, mode, *, size=None, max_size=DEFAULT_MAX_SIZE):
    """The driving mask for ``driving`` (an :class:`ExportedClip`), rendered from the assigned identities, a
    frame at a time (see ``render.drain``).

    One mask per driving frame, rendered through ``camera`` at the scene frame
    that shows it; written to ``folder`` aligned with the driving clip.
    """
    background = backgrounds(mode)[0]
    prepare_folder(folder)
    paths = [os.path.join(folder, MASK_NAME.format(driving.frame_start + i)) for i in range(driving.count)]
    counts, warnings = yield from iter_render_identity_frames(
        scene, camera, driving.scene_frames, paths, background, size=size, max_size=max_size)
    width, height = output_size(scene, max_size, size)
    _pad(folder, driving, background, width, height)
    identities = set()
    for frame_counts in counts:
        identities |= set(frame_counts["identities"])
    note = "Rendered the assigned identities through camera {:s} on {:s}".format(
        camera.name, "black" if background == (0, 0, 0) else "white")
    if warnings:
        note += " (" + "; ".join(warnings) + ")"
    return _aligned_clip(driving, folder, identities, 'identities through camera "{:s}"'.format(camera.name), note)


def render_reference_mask(scene, camera, path, mode, *, frame=None, size=None, max_size=DEFAULT_MAX_SIZE):
    """The reference mask: the assigned identities through ``camera`` at ``frame`` (default: current).

    Returns ``(identities, warnings)``.
    """
    background = backgrounds(mode)[1]
    os.makedirs(os.path.dirname(path) or ".", exist_ok=True)
    frame = scene.frame_current if frame is None else frame
    counts, warnings = render_identity_frames(
        scene, camera, [frame], [path], background, size=size, max_size=max_size)
    return sorted(counts[0]["identities"]), warnings


# --------------------------------------------------------------------------------------------
# Mask strips: a Blender mask (one layer per identity) or a colour-mask video in the timeline.

def export_mask_strip(scene, strip, driving, folder, mode, **options):
    """The driving mask for ``driving`` from a strip of ``scene`` (:func:`iter_export_mask_strip`)."""
    return drain(iter_export_mask_strip(scene, strip, driving, folder, mode, **options))


def iter_export_mask_strip(scene, strip, driving, folder, mode, *, max_size=DEFAULT_MAX_SIZE):
    """The driving mask for ``driving`` from a strip of ``scene``, aligned with the driving clip, a frame at a
    time (see ``render.drain``).

    A mask strip (a Blender Mask, drawn in the Movie Clip Editor): mask layer
    ``i`` is identity ``i`` (layers hidden from rendering are left out; with
    more than six layers the rest are ignored), drawn in its palette colour on
    the mode's background. A movie or image strip: its pictures, as they are
    (a colour-mask video lined up with the footage in the timeline).

    Each mask frame is rendered at the scene frame that shows its driving
    frame. When the driving clip is footage read directly (not rendered), the
    mask covers the footage's frame: it is rendered at the footage's aspect
    with the strip's own transform and crop left out.
    """
    if strip.type not in {'MASK', 'MOVIE', 'IMAGE'}:
        raise ExportError("The strip {:s} is neither a mask strip nor a movie or image strip".format(strip.name))
    background = backgrounds(mode)[0]
    prepare_folder(folder)
    # Footage read directly: the mask covers the footage's frame. Rendered footage: the same canvas.
    canvas = None if driving.baked else driving_frame_size(driving, max_size)
    identities, warnings, size = set(), [], None
    # A colour-mask picture read directly covers the footage's frame: stretched over the canvas.
    fit = _fit_scale(strip, canvas) if canvas is not None and strip.type != 'MASK' else (1.0, 1.0)
    with sequencer_copy(scene, keep={strip.name}, canvas=canvas, max_size=max_size) as (copy, _made), \
            Restorer() as restorer:
        own = copy.sequence_editor.strips_all[strip.name]
        own.mute = False  # a muted mask strip (Auto Masks adds them muted) still gives its pictures
        own.blend_type = 'REPLACE'
        own.blend_alpha = 1.0
        if not driving.baked:
            own.transform.offset_x = own.transform.offset_y = own.transform.rotation = 0.0
            own.transform.scale_x, own.transform.scale_y = fit
            own.crop.min_x = own.crop.max_x = own.crop.min_y = own.crop.max_y = 0
        all_layers, layers = [], []
        if strip.type == 'MASK':
            if strip.mask is None:
                raise ExportError("The mask strip {:s} has no mask".format(strip.name))
            all_layers = list(strip.mask.layers)
            if len(all_layers) > 6:
                warnings.append("only the first 6 of {:d} mask layers are used".format(len(all_layers)))
            layers = [(i + 1, layer) for i, layer in enumerate(all_layers[:6]) if not layer.hide_render]
            if not layers:
                raise ExportError("The mask {:s} has no layer to render".format(strip.mask.name))
            for layer in all_layers:
                restorer.set(layer, "hide_render", layer.hide_render)
        scratch = os.path.join(folder, ".layer.png")
        rendered = {}
        try:
            for i, frame in enumerate(driving.scene_frames):
                path = os.path.join(folder, MASK_NAME.format(driving.frame_start + i))
                if frame in rendered:  # the same scene frame shows several driving frames
                    _link_or_write(rendered[frame], path)
                    continue
                copy.frame_current = frame
                if strip.type == 'MASK':
                    _render_layers(copy, own, all_layers, layers, scratch, path, background)
                else:
                    render_still(copy, path)
                pixels, width, height = read_pixels(path)
                if size not in (None, (width, height)):
                    raise ExportError("The mask frames came out in different sizes")
                size = (width, height)
                identities |= set(classify(pixels)["identities"])
                rendered[frame] = path
                yield i + 1, len(driving.scene_frames)
        finally:
            if os.path.exists(scratch):
                os.remove(scratch)
    width, height = size
    _pad(folder, driving, background, width, height)
    if strip.type == 'MASK':
        note = "Rendered mask {:s}: layer i is identity i, on {:s}".format(
            strip.mask.name, "black" if background == (0, 0, 0) else "white")
    else:
        note = "Rendered the colour-mask strip {:s} as it is".format(strip.name)
    if warnings:
        note += " (" + "; ".join(warnings) + ")"
    return _aligned_clip(driving, folder, identities, 'strip "{:s}"'.format(strip.name), note)


def _fit_scale(strip, canvas):
    """``(scale x, scale y)`` making a movie or image strip's pictures cover ``canvas`` (width, height) exactly.

    The canvas has the footage's aspect, rounded to whole pixels: stretching
    (by well under a pixel) keeps the mask's colours exact up to its edges.
    """
    if strip.type == 'MOVIE':
        _frames, width, height = movie_info(abspath(strip.filepath, strip.id_data))
    else:
        element = strip.elements[0]
        width, height, _alpha = image_info(os.path.join(abspath(strip.directory, strip.id_data), element.filename))
    if width <= 0 or height <= 0:
        raise ExportError("Cannot tell the size of the pictures of strip {:s}".format(strip.name))
    return canvas[0] / width, canvas[1] / height


def preview_mask_strip(scene, strip, frame, folder, mode, *, max_size=DEFAULT_MAX_SIZE):
    """The driving mask ``strip`` gives at scene ``frame``, as an export renders it; ``(path, identities)``.

    Written to ``folder`` (emptied of earlier previews first).
    """
    left, right = compat.strip_handles(strip)
    if not left <= frame < right:
        raise ExportError("The mask strip {:s} does not show frame {:d} (it shows {:d}-{:d})".format(
            strip.name, frame, left, right - 1))
    fps = scene.render.fps / scene.render.fps_base
    one = ExportedClip(path="", kind="sequence", fps=fps, frame_start=0, frame_end=1, frame_count=1,
                       scene_frames=[frame], scene_frame_start=frame, shown=[0], scene_fps=fps, baked=True)
    clip = export_mask_strip(scene, strip, one, folder, mode, max_size=max_size)
    return clip.files[0], clip.identities


def _render_layers(copy, own, all_layers, layers, scratch, path, background):
    """Render each layer alone, threshold it, and write the palette-coloured composite to ``path``."""
    covered, width, height = [], 0, 0
    for identity, layer in layers:
        for other in all_layers:
            other.hide_render = other != layer
        own.invalidate_cache('RAW')  # the strip's cached picture still shows the other layers
        render_still(copy, scratch)
        pixels, width, height = read_pixels(scratch)
        covered.append((identity, coverage(pixels)))
    planes = fill(compose_layers(covered, width * height), background)
    write_png(path, width, height, interleave(planes))


def _link_or_write(source, target):
    try:
        os.link(source, target)
    except OSError:
        with open(source, "rb") as fh:
            data = fh.read()
        with open(target, "wb") as fh:
            fh.write(data)


# --------------------------------------------------------------------------------------------
# A colour-mask file made elsewhere.

def export_mask_file(path, driving):
    """A colour-mask video or image folder made elsewhere, checked against the driving clip.

    It must have one frame per frame at the driving path (the backend pairs
    them by index). Its identities are read from its first frame.
    """
    path = abspath(path)
    if os.path.isdir(path):
        names = folder_listing(path)
        if not names:
            raise ExportError("The mask folder has no images: " + path)
        count, first, kind = len(names), os.path.join(path, names[min(driving.frame_start, len(names) - 1)]), "sequence"
        files = [os.path.join(path, name) for name in names]
    elif os.path.isfile(path) and os.path.splitext(path)[1].lower() in MOVIE_EXTENSIONS:
        count, first, kind, files = movie_info(path)[0], path, "movie", []
    elif os.path.isfile(path):
        raise ExportError("A mask video must be a movie file or a folder of images: " + path)
    else:
        raise ExportError("The mask video was not found: " + path)
    if count != driving.frame_count:
        raise ExportError("The mask has {:d} frames but the driving clip has {:d}: {:s}".format(
            count, driving.frame_count, path))
    pixels, _w, _h = read_pixels(first)
    identities = sorted(classify(pixels)["identities"])
    note = "Mask file used as it is; identities {:s} on its {:s} frame".format(
        identity_names(identities) or "none", "first" if kind == "movie" else "first exported")
    return ExportedClip(
        path=path, kind=kind, fps=driving.fps,
        frame_start=driving.frame_start, frame_end=driving.frame_end, frame_count=count,
        scene_frames=list(driving.scene_frames), scene_frame_start=driving.scene_frame_start,
        shown=list(driving.shown), scene_fps=driving.scene_fps, files=files, baked=False,
        source='file "{:s}"'.format(os.path.basename(path)), note=note, identities=identities,
    )


# --------------------------------------------------------------------------------------------
# The identity check.

def check_identities(inputs):
    """``(ok, line)`` for recorded inputs (see :func:`~.clip.load_inputs`).

    Without a driving mask every driving frame is identity 1; a reference
    without a mask file binds identity 1 (through its alpha, or the whole image).
    Masks made for another mode (their backgrounds are the other way round)
    fail the check too.
    """
    mode = inputs.get("mode")
    for key, what in (("driving_mask_mode", "driving mask"), ("reference_mask_mode", "reference mask")):
        made_for = inputs.get(key)
        if made_for and mode and made_for != mode:
            return False, "The {:s} was made for {:s} mode, the job is in {:s} mode: export it again".format(
                what, made_for, mode)
    mask = inputs.get("driving_mask")
    driving = set(mask["identities"]) if mask else {1}
    reference = inputs.get("reference")
    if reference is None:
        return False, "No reference yet: export a reference still"
    bound = set(reference["identities"]) if reference.get("mask_path") else {1}
    extra = [set(view.get("identities", ())) for view in inputs.get("extra_references", ())]
    return identity_check(driving, bound, extra)
