# SPDX-License-Identifier: GPL-3.0-or-later
"""Driving footage: from a sequencer strip, from the sequencer's output, from a camera in the 3D scene.

A movie or image strip that Blender shows unaltered is read straight from its
file (:func:`export_strip` returns the file, the footage frames the strip
shows and the file's own rate: nothing is decoded or written). Everything else
(scene and meta strips, strips with modifiers, effects, retiming, crops...) is
rendered through the sequencer, frame by frame, to a PNG sequence at the
scene's rate. Either way the :class:`~.clip.ExportedClip` says which scene
frame shows which exported frame, exactly as the timeline does.
"""

__all__ = (
    "ENGINES",
    "bake_reasons",
    "export_sequencer_range",
    "export_strip",
    "iter_export_sequencer_range",
    "iter_export_strip",
    "iter_render_camera_clip",
    "render_camera_clip",
    "strip_playback",
)

import bisect
import os

from .. import compat
from ..core import timing
from ..core.inputs import ExportError, ExportedClip
from .render import (
    DEFAULT_MAX_SIZE,
    abspath,
    drain,
    movie_frame_count,
    output_size,
    prepare_folder,
    render_still,
    scene_fps,
    set_png_output,
    temporary_scene,
)
from .sequencer import (
    FRAME_NAME,
    adjustments_above,
    animated_paths,
    effects_using,
    folder_listing,
    iter_render_sequencer_frames,
    keep_for,
    link_or_copy,
    strip_data_path,
)

ENGINES = ('WORKBENCH', 'EEVEE', 'SCENE')  # 'SCENE': the scene's own engine and settings


# --------------------------------------------------------------------------------------------
# What a strip shows.

def bake_reasons(scene, strip):
    """Why ``strip`` must be rendered through the sequencer; an empty list when its file can be read as is."""
    reasons = []
    if strip.type not in {'MOVIE', 'IMAGE'}:
        reasons.append("it is a {:s} strip".format(strip.type.lower().replace("_", " ")))
    if strip.parent_meta() is not None:
        reasons.append("it is inside a meta strip")
    if any(compat.strip_modifier_enabled(modifier) for modifier in strip.modifiers):
        reasons.append("it has modifiers")
    if len(getattr(strip, "retiming_keys", ())):
        reasons.append("it is retimed")
    if strip.use_reverse_frames:
        reasons.append("it plays backwards")
    if strip.strobe > 1.0:
        reasons.append("it uses strobe")
    transform = strip.transform
    if transform.offset_x or transform.offset_y or transform.rotation or transform.scale_x != transform.scale_y:
        reasons.append("it is moved, rotated or stretched")
    crop = strip.crop
    if crop.min_x or crop.max_x or crop.min_y or crop.max_y:
        reasons.append("it is cropped")
    if strip.use_flip_x or strip.use_flip_y:
        reasons.append("it is flipped")
    if strip.color_saturation != 1.0 or strip.color_multiply != 1.0:
        reasons.append("its colours are adjusted")
    if strip.blend_alpha < 1.0:
        reasons.append("it is partly transparent")
    if strip.use_deinterlace:
        reasons.append("it is deinterlaced")
    if strip.type in {'MOVIE', 'IMAGE'} and strip.use_multiview:
        reasons.append("it is multi-view")
    if strip.type == 'MOVIE' and strip.stream_index:
        reasons.append("it uses video stream {:d}".format(strip.stream_index))
    if strip.type == 'IMAGE' and len(strip.elements) < 2:
        reasons.append("it is a single image")
    if strip.type == 'IMAGE' and len({os.path.splitext(e.filename)[1].lower() for e in strip.elements}) > 1:
        reasons.append("it mixes image types")
    path = strip_data_path(strip)
    if any(path in animated for animated in animated_paths(scene)):
        reasons.append("its settings are animated")
    if effects_using(scene, strip):
        reasons.append("effects use it")
    if adjustments_above(scene, strip):
        reasons.append("an adjustment layer covers it")
    return reasons


def strip_playback(scene, strip, footage_frames=None):
    """How a movie or image strip shows its footage, as :class:`timing.StripPlayback`.

    The same rule the import side uses to put generated frames back (see
    ``results``): footage frame ``animation_offset_start + r(p)`` at scene frame
    ``f``, ``p = (f - content start) * rate``. ``footage_frames``: the movie's
    frame count, when already known.
    """
    if strip.type == 'IMAGE':
        duration = compat.strip_content_duration(strip)
        return timing.StripPlayback(
            content_start=compat.strip_content_start(strip),
            content_frames=duration,
            rate=1.0,
            footage_offset=strip.animation_offset_start,
            footage_frames=duration,
            footage_fps=scene_fps(scene),
        )
    if strip.type != 'MOVIE':
        raise ExportError("The strip {:s} is not a movie or image strip".format(strip.name))
    path = abspath(strip.filepath, strip.id_data)
    total = footage_frames if footage_frames is not None else movie_frame_count(path)
    media_fps = strip.fps
    if media_fps <= 0:
        raise ExportError("Cannot tell the frame rate of the movie " + path)
    used = max(1, total - strip.animation_offset_start - strip.animation_offset_end)
    duration = compat.strip_content_duration(strip)
    return timing.StripPlayback(
        content_start=compat.strip_content_start(strip),
        content_frames=duration,
        rate=timing.movie_rate(duration, used, media_fps, scene_fps(scene)),
        footage_offset=strip.animation_offset_start,
        footage_frames=used,
        footage_fps=media_fps,
        rounding=compat.movie_position_rounding(),
    )


def _timing(shown_absolute, scene_frame_start):
    """``(first, end, scene_frames, shown)`` from the footage frame shown at each scene frame."""
    first, last = min(shown_absolute), max(shown_absolute)
    scene_frames = []
    for footage in range(first, last + 1):
        j = bisect.bisect_left(shown_absolute, footage)  # shown frames never go backwards
        if j < len(shown_absolute) and shown_absolute[j] == footage:
            scene_frames.append(scene_frame_start + j)
            continue
        # Never shown (footage faster than the scene): the nearest scene frame.
        before, after = shown_absolute[j - 1], shown_absolute[j]
        pick = j - 1 if footage - before <= after - footage else j
        scene_frames.append(scene_frame_start + pick)
    shown = [footage - first for footage in shown_absolute]
    return first, last + 1, scene_frames, shown


def _direct_movie(scene, strip):
    path = abspath(strip.filepath, strip.id_data)
    if not os.path.isfile(path):
        raise ExportError("The movie of strip {:s} is missing: {:s}".format(strip.name, path))
    total = movie_frame_count(path)
    playback = strip_playback(scene, strip, total)
    left, right = compat.strip_handles(strip)
    shown_absolute = [playback.footage_frame(f) for f in range(left, right)]
    first, end, scene_frames, shown = _timing(shown_absolute, left)
    rate = "" if playback.rate == 1.0 else ", played at {:g} fps in a {:g} fps scene".format(
        playback.footage_fps, scene_fps(scene))
    return ExportedClip(
        path=path, kind="movie", fps=playback.footage_fps,
        frame_start=first, frame_end=end, frame_count=total,
        scene_frames=scene_frames, scene_frame_start=left, shown=shown, scene_fps=scene_fps(scene),
        baked=False, source='strip "{:s}"'.format(strip.name), strip=strip.name,
        note="Read from the movie directly: footage frames {:d}-{:d} of {:d}{:s}".format(
            first, end - 1, total, rate),
    )


def _direct_images(scene, strip, folder):
    directory = abspath(strip.directory, strip.id_data)
    elements = list(strip.elements)
    index_of = {element.as_pointer(): i for i, element in enumerate(elements)}
    left, right = compat.strip_handles(strip)
    shown_absolute = [index_of[strip.strip_elem_from_frame(f).as_pointer()] for f in range(left, right)]
    first, end, scene_frames, shown = _timing(shown_absolute, left)
    names = [element.filename for element in elements]
    # A job numbers the frames of the whole folder, so every image of the strip must be there.
    missing = [name for name in names if not os.path.isfile(os.path.join(directory, name))]
    if missing:
        raise ExportError("The image {:s} of strip {:s} is missing".format(
            os.path.join(directory, missing[0]), strip.name))
    if folder_listing(directory) == names:
        path, files, note = directory, [os.path.join(directory, n) for n in names], "Read from its folder directly"
    else:
        # The folder holds other images too: link the strip's own files into a folder of their own.
        path = prepare_folder(folder)
        ext = os.path.splitext(names[0])[1].lower()
        files = []
        for i, name in enumerate(names):
            target = os.path.join(path, "frame_{:06d}{:s}".format(i, ext))
            link_or_copy(os.path.join(directory, name), target)
            files.append(target)
        note = "Linked from its folder (which holds other images too)"
    return ExportedClip(
        path=path, kind="sequence", fps=scene_fps(scene),
        frame_start=first, frame_end=end, frame_count=len(names),
        scene_frames=scene_frames, scene_frame_start=left, shown=shown, scene_fps=scene_fps(scene),
        files=files, baked=False, source='strip "{:s}"'.format(strip.name), strip=strip.name,
        note="{:s}: images {:d}-{:d} of {:d}".format(note, first, end - 1, len(names)),
    )


def _shown_for(scene_frames):
    """``shown`` for frames rendered at ascending scene frames: the last one at or before each scene frame."""
    start = scene_frames[0]
    return [bisect.bisect_right(scene_frames, f) - 1 for f in range(start, scene_frames[-1] + 1)]


def _rendered_clip(files, folder, scene, scene_frames, source, note):
    return ExportedClip(
        path=folder, kind="sequence", fps=scene_fps(scene),
        frame_start=0, frame_end=len(files), frame_count=len(files),
        scene_frames=list(scene_frames), scene_frame_start=scene_frames[0], shown=_shown_for(scene_frames),
        scene_fps=scene_fps(scene), files=files, baked=True, source=source, note=note,
    )


def export_strip(scene, strip, folder, **options):
    """Driving footage from ``strip`` of ``scene`` over its visible range (:func:`iter_export_strip`)."""
    return drain(iter_export_strip(scene, strip, folder, **options))


def iter_export_strip(scene, strip, folder, *, max_size=DEFAULT_MAX_SIZE, bake=None):
    """Driving footage from ``strip`` of ``scene`` over its visible range (handles applied).

    Read straight from the strip's movie or image files when Blender shows them
    unaltered, else rendered through the sequencer into ``folder`` (PNG, at the
    scene's rate, the longest side at most ``max_size``) with every other strip
    muted except effects and adjustment layers acting on it. ``bake``: True
    forces rendering, False refuses it, None decides.
    """
    if strip.type == 'SOUND':
        raise ExportError("The strip {:s} is a sound strip; choose a strip with pictures".format(strip.name))
    left, right = compat.strip_handles(strip)
    if right <= left:
        raise ExportError("The strip {:s} shows no frames".format(strip.name))
    reasons = bake_reasons(scene, strip)
    if bake is False and reasons:
        raise ExportError("The strip {:s} cannot be read directly: {:s}".format(strip.name, "; ".join(reasons)))
    if not reasons and not bake:
        if strip.type == 'MOVIE':
            return _direct_movie(scene, strip)
        return _direct_images(scene, strip, folder)
    prepare_folder(folder)
    frames = range(left, right)
    files = yield from iter_render_sequencer_frames(scene, frames, folder, keep=keep_for(scene, strip),
                                                    max_size=max_size)
    why = "; ".join(reasons) if reasons else "asked to"
    return _rendered_clip(
        files, folder, scene, list(frames), 'strip "{:s}"'.format(strip.name),
        "Rendered through the sequencer ({:s}): scene frames {:d}-{:d}".format(why, left, right - 1),
    )


def export_sequencer_range(scene, frame_start, frame_end, folder, **options):
    """Driving footage from the sequencer's output over scene frames ``frame_start``..``frame_end`` (inclusive)."""
    return drain(iter_export_sequencer_range(scene, frame_start, frame_end, folder, **options))


def iter_export_sequencer_range(scene, frame_start, frame_end, folder, *, max_size=DEFAULT_MAX_SIZE):
    """:func:`export_sequencer_range` a frame at a time (see ``render.drain``)."""
    if frame_end < frame_start:
        raise ExportError("The frame range {:d}-{:d} is empty".format(frame_start, frame_end))
    prepare_folder(folder)
    frames = range(frame_start, frame_end + 1)
    files = yield from iter_render_sequencer_frames(scene, frames, folder, max_size=max_size)
    return _rendered_clip(
        files, folder, scene, list(frames), 'sequencer of "{:s}"'.format(scene.name),
        "Rendered the sequencer output: scene frames {:d}-{:d}".format(frame_start, frame_end),
    )


# --------------------------------------------------------------------------------------------
# Rendering the 3D scene.

def render_camera_clip(scene, camera, frame_start, frame_end, folder, **options):
    """Driving footage rendered from ``camera`` (:func:`iter_render_camera_clip`)."""
    return drain(iter_render_camera_clip(scene, camera, frame_start, frame_end, folder, **options))


def iter_render_camera_clip(scene, camera, frame_start, frame_end, folder, *, engine='WORKBENCH', size=None,
                            max_size=DEFAULT_MAX_SIZE, samples=16):
    """Driving footage rendered from ``camera`` over scene frames ``frame_start``..``frame_end`` (inclusive),
    a frame at a time (see ``render.drain``).

    ``engine``: 'WORKBENCH' (fast, the scene's Workbench settings), 'EEVEE'
    (``samples`` samples) or 'SCENE' (the scene's own engine and settings).
    ``size``: ``(width, height)``; by default the scene's resolution, the
    longest side at most ``max_size``. The scene itself is not changed.
    """
    if camera is None or camera.type != 'CAMERA':
        raise ExportError("Choose a camera to render the driving motion through")
    if engine not in ENGINES:
        raise ExportError("engine must be one of {:s}".format(", ".join(ENGINES)))
    if frame_end < frame_start:
        raise ExportError("The frame range {:d}-{:d} is empty".format(frame_start, frame_end))
    prepare_folder(folder)
    frames = range(frame_start, frame_end + 1)
    files = []
    with temporary_scene(scene) as (copy, _made):
        width, height = output_size(scene, max_size, size)
        copy.render.resolution_x, copy.render.resolution_y = width, height
        copy.camera = camera
        copy.render.use_sequencer = False
        copy.render.film_transparent = False
        if engine == 'WORKBENCH':
            copy.render.engine = 'BLENDER_WORKBENCH'
        elif engine == 'EEVEE':
            copy.render.engine = compat.eevee_engine()
            copy.eevee.taa_render_samples = samples
        set_png_output(copy, 'RGB')
        for i, frame in enumerate(frames):
            copy.frame_current = frame
            files.append(render_still(copy, os.path.join(folder, FRAME_NAME.format(i))))
            yield i + 1, len(frames)
    return _rendered_clip(
        files, folder, scene, list(frames), 'camera "{:s}"'.format(camera.name),
        "Rendered through camera {:s} ({:s}, {:d}x{:d}): scene frames {:d}-{:d}".format(
            camera.name, engine.lower(), width, height, frame_start, frame_end),
    )
