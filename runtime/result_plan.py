# SPDX-License-Identifier: GPL-3.0-or-later
"""Planning the import of a finished SCAIL-2 job: read the scene, check everything, change nothing.

``core.results`` and ``core.timing`` (no ``bpy``) read the job and do the timing
and framing maths; :func:`plan_import` reads the scene and returns an
:class:`ImportPlan` of everything ``runtime.result_create`` will make.
"""

__all__ = (
    "ImportPlan",
    "find_driving_strip",
    "plan_import",
    "strip_playback",
)

import os
from dataclasses import dataclass, field

import bpy
from mathutils import Matrix

from .. import compat
from ..core import results, timing
from ..core.results import ResultError
from ..props import RESULT_PROP


@dataclass
class ImportPlan:
    """Everything an import will create, worked out before creating anything."""
    result: results.JobResult
    name: str
    warnings: list = field(default_factory=list)
    # Image strip.
    strip_scene: object = None
    driving: object = None  # the driving strip, or None
    strip_timed: object = None  # timing.TimedFrames
    channel: int = 0
    visible: tuple = None  # (first, end) scene frames to trim the new strip to, or None
    overlay: dict = None  # transform values lining the strip up with the driving strip, or None
    # Camera plane.
    plane_scene: object = None
    camera: object = None
    plane_timed: object = None
    plane_matrix: object = None  # matrix_basis of the plane under the camera
    plane_size: tuple = None  # (width, height)
    sequence_path: str = ""  # number 1 of the scene-rate sequence


def _abspath(path):
    return os.path.normpath(bpy.path.abspath(path)) if path else ""


def _same_file(a, b):
    try:
        return bool(a and b) and os.path.samefile(a, b)
    except OSError:
        return False


def _scene_fps(scene):
    return scene.render.fps / scene.render.fps_base


def _movie_frame_count(path):
    """Frames of the movie at ``path``, as Blender reads it (through a movie clip, removed again)."""
    before = {clip.name for clip in bpy.data.movieclips}
    try:
        clip = bpy.data.movieclips.load(path, check_existing=True)
    except RuntimeError as ex:
        raise ResultError("Cannot read the driving strip's movie {:s}: {:s}".format(
            path, str(ex).strip().splitlines()[-1])) from None
    try:
        return clip.frame_duration
    finally:
        if clip.name not in before:
            bpy.data.movieclips.remove(clip)


def find_driving_strip(scene, name, result):
    """The named top-level strip; with no name, the one strip showing the job's driving clip, or None."""
    editor = scene.sequence_editor
    strips = list(editor.strips) if editor is not None else []
    if name:
        for strip in strips:
            if strip.name == name:
                return strip
        if editor is not None and editor.strips_all.get(name) is not None:
            raise ResultError("The driving strip {:s} is inside a meta strip; use a top-level strip".format(name))
        raise ResultError("No strip named {:s} in scene {:s}".format(name, scene.name))
    matches = [
        strip for strip in strips
        if strip.type == 'MOVIE' and RESULT_PROP not in strip
        and _same_file(_abspath(strip.filepath), result.source_path)
    ]
    if len(matches) > 1:
        raise ResultError("Several strips show the job's driving clip ({:s}): choose one".format(
            ", ".join(strip.name for strip in matches)))
    return matches[0] if matches else None


def strip_playback(strip, scene, result, warnings):
    """How ``strip`` shows its footage (see :class:`timing.StripPlayback`)."""
    if strip.type not in {'MOVIE', 'IMAGE'}:
        raise ResultError("The driving strip {:s} is a {:s} strip; use a movie or image strip".format(
            strip.name, strip.type.lower()))
    if len(strip.retiming_keys):
        raise ResultError("The driving strip {:s} is retimed; reset its retiming to import against it".format(
            strip.name))
    if strip.use_reverse_frames:
        raise ResultError("The driving strip {:s} plays backwards; turn off Reverse Frames".format(strip.name))
    if strip.strobe > 1.0:
        raise ResultError("The driving strip {:s} uses Strobe; set it to 1 to import against it".format(strip.name))
    offset = strip.animation_offset_start
    content_start = compat.strip_content_start(strip)
    content_frames = compat.strip_content_duration(strip)
    if strip.type == 'IMAGE':
        return timing.StripPlayback(
            content_start=content_start,
            content_frames=content_frames,
            rate=1.0,
            footage_offset=offset,
            footage_frames=content_frames,
            footage_fps=result.source_fps,
        )
    path = _abspath(strip.filepath)
    media_fps = strip.fps
    if media_fps <= 0:
        raise ResultError("Cannot read the driving strip's movie: " + path)
    same = _same_file(path, result.source_path)
    if same and result.source_frame_count > 0:
        total = result.source_frame_count
    else:
        total = _movie_frame_count(path)
        if not same:
            warnings.append("The driving strip shows {:s}; the job was made from {:s}".format(
                os.path.basename(path), os.path.basename(result.source_path) or "another clip"))
    used = max(1, total - offset - strip.animation_offset_end)
    return timing.StripPlayback(
        content_start=content_start,
        content_frames=content_frames,
        rate=timing.movie_rate(content_frames, used, media_fps, _scene_fps(scene)),
        footage_offset=offset,
        footage_frames=used,
        footage_fps=result.source_fps if same else media_fps,
        rounding=compat.movie_position_rounding(),
    )


def _overlay(driving, result):
    """Transform values that put the generated frames over the footage they were cut from."""
    if driving is None or driving.type != 'MOVIE' or not len(driving.elements):
        return None
    element = driving.elements[0]
    if element.orig_width <= 0 or element.orig_height <= 0:
        return None
    scale = results.overlay_scale(element.orig_width, element.orig_height, result.width, result.height)
    transform = driving.transform
    return {
        "scale_x": transform.scale_x * scale,
        "scale_y": transform.scale_y * scale,
        "offset_x": transform.offset_x,
        "offset_y": transform.offset_y,
        "rotation": transform.rotation,
        "origin": tuple(transform.origin),
        "use_flip_x": driving.use_flip_x,
        "use_flip_y": driving.use_flip_y,
    }


def _plan_strip(plan, scene, driving_name, frame_start):
    result = plan.result
    plan.strip_scene = scene
    driving = find_driving_strip(scene, driving_name, result)
    plan.driving = driving
    editor = scene.sequence_editor
    strips = list(editor.strips) if editor is not None else []
    if driving is not None:
        playback = strip_playback(driving, scene, result, plan.warnings)
        timed = timing.strip_frames(result, playback)
        if timed is None:
            raise ResultError("None of the generated frames ({:g}-{:g} s of the clip) is shown by strip {:s}".format(
                result.times[0], result.times[-1], driving.name))
        first, end = timed.first_frame, timed.end_frame
        left, right = compat.strip_handles(driving)
        visible = (max(first, left), min(end, right))
        if visible[0] < visible[1]:
            plan.visible = visible
            first, end = visible
        else:
            plan.warnings.append("The generated frames fall outside the visible part of strip " + driving.name)
        lowest = driving.channel + 1
    else:
        timed = timing.real_time_frames(result, frame_start, _scene_fps(scene))
        first, end = timed.first_frame, timed.end_frame
        lowest = max((strip.channel for strip in strips), default=0) + 1
    channel = results.free_channel(
        ((strip.channel, *compat.strip_handles(strip)) for strip in strips),
        lowest, first, end,
    )
    if channel is None:
        raise ResultError("No free channel above channel {:d} for frames {:d}-{:d}".format(lowest - 1, first, end - 1))
    plan.strip_timed = timed
    plan.channel = channel
    plan.overlay = _overlay(driving, result)


def _plane_timing(plan, scene, driving_name, frame_start):
    """TimedFrames for the plane: the driving strip's when it is in the plane's scene, else real time."""
    result = plan.result
    if plan.strip_scene is None:
        # Plane only: time it to the driving strip of its own scene, if there is one.
        driving = find_driving_strip(scene, driving_name, result)
        if driving is not None:
            timed = timing.strip_frames(result, strip_playback(driving, scene, result, plan.warnings))
            if timed is None:
                raise ResultError("None of the generated frames is shown by strip " + driving.name)
            return timed
    elif plan.driving is not None:
        if plan.strip_scene == scene:
            return plan.strip_timed
        plan.warnings.append("The plane's scene {:s} is not the sequencer scene: it plays in real time "
                             "from frame {:d}".format(scene.name, frame_start))
    return timing.real_time_frames(result, frame_start, _scene_fps(scene))


def _plan_plane(plan, scene, depsgraph, camera_name, distance, fill_mode):
    result = plan.result
    plan.plane_scene = scene
    if camera_name:
        camera = scene.objects.get(camera_name)
        if camera is None:
            raise ResultError("No object named {:s} in scene {:s}".format(camera_name, scene.name))
    else:
        camera = scene.camera
        if camera is None:
            raise ResultError("Scene {:s} has no camera; choose one".format(scene.name))
    if camera.type != 'CAMERA':
        raise ResultError("{:s} is not a camera".format(camera.name))
    cam = camera.data
    if cam.type not in {'PERSP', 'ORTHO'}:
        raise ResultError("Camera {:s} is panoramic; use a perspective or orthographic camera".format(camera.name))
    if not cam.clip_start < distance < cam.clip_end:
        raise ResultError("Distance {:g} is outside camera {:s}'s clipping range ({:g}-{:g})".format(
            distance, camera.name, cam.clip_start, cam.clip_end))
    # Evaluated: a camera just moved by a script, constrained or animated is where it shows.
    world = camera.evaluated_get(depsgraph).matrix_world.copy()
    if abs(world.to_3x3().determinant()) < 1e-12:
        raise ResultError("Camera {:s} has zero scale".format(camera.name))
    render = scene.render
    center_x, center_y, view_w, view_h = results.camera_view(
        distance,
        ortho=cam.type == 'ORTHO',
        lens=cam.lens,
        ortho_scale=cam.ortho_scale,
        sensor_width=cam.sensor_width,
        sensor_height=cam.sensor_height,
        sensor_fit=cam.sensor_fit,
        resolution_x=render.resolution_x,
        resolution_y=render.resolution_y,
        pixel_aspect_x=render.pixel_aspect_x,
        pixel_aspect_y=render.pixel_aspect_y,
        shift_x=cam.shift_x,
        shift_y=cam.shift_y,
    )
    plan.camera = camera
    plan.plane_size = results.plane_size(view_w, view_h, result.width / result.height, fill_mode)
    # Under the camera, undoing the camera's own scale: the plane's size is in world units.
    plan.plane_matrix = world.inverted() @ world.normalized() @ Matrix.Translation((center_x, center_y, -distance))


def plan_import(context, *, filepath, form, driving_strip="", frame_start=None, camera="",
                distance=10.0, fill_mode='FILL'):
    """Check an import and work out everything it will create; a ResultError says what is wrong.

    Changes no Blender data. ``frame_start`` (None: the scene's current frame)
    places the result when there is no driving strip.
    """
    if form not in {'STRIP', 'PLANE', 'BOTH'}:
        raise ResultError("Unknown form {!r}".format(form))
    if not filepath:
        raise ResultError("Choose a job manifest (manifest.json) first")
    result = results.load_result(_abspath(filepath))
    plan = ImportPlan(result=result, name="SCAIL " + result.job_id)
    plan.warnings.extend(result.warnings)
    if form in {'STRIP', 'BOTH'}:
        scene = compat.sequencer_scene(context)
        if scene is None:
            raise ResultError("There is no sequencer scene to add the strip to")
        _plan_strip(plan, scene, driving_strip, scene.frame_current if frame_start is None else frame_start)
    if form in {'PLANE', 'BOTH'}:
        scene = context.scene
        start = scene.frame_current if frame_start is None else frame_start
        _plan_plane(plan, scene, context.evaluated_depsgraph_get(), camera, distance, fill_mode)
        plan.plane_timed = _plane_timing(plan, scene, driving_strip, start)
    return plan
