# SPDX-License-Identifier: GPL-3.0-or-later
"""What each exported input was made from, so an input whose source changed is exported again.

A fingerprint is plain JSON data (lists, strings, numbers) describing the
source as the Inputs panel sets it up now: files by absolute path, size and
modification time; strips by name, type, channel, range and media; cameras by
name; the frame range, the resolution and the size limit. An export records the
fingerprint of what it used (``inputs.json``, ``made_from``); Generate exports
again every input whose recorded fingerprint differs from the current one
(``core.inputs.stale_inputs``).

What it cannot see: edits to the 3D scene's animation or materials. Inputs
rendered from the 3D scene (Driving = 3D Scene, Identity masks, a camera
reference) are exported again when their camera, frame range, resolution,
engine or identity assignment changed; after other edits to the scene, press
Export All.
"""

__all__ = (
    "driving_fingerprint",
    "mask_fingerprint",
    "reference_fingerprint",
)

import os

import bpy

from .. import compat
from ..props.input_settings import get_settings


def _file(path, block=None):
    """``[absolute path, size, mtime]`` of a file (size and mtime None when it is missing)."""
    path = os.path.normpath(bpy.path.abspath(path, library=getattr(block, "library", None))) if path else ""
    try:
        info = os.stat(path)
        return [path, info.st_size, info.st_mtime_ns]
    except OSError:
        return [path, None, None]


def _strip(strip):
    if strip is None:
        return None
    left, right = compat.strip_handles(strip)
    media = None
    if strip.type in ('MOVIE', 'SOUND'):
        media = _file(strip.filepath if strip.type == 'MOVIE' else strip.sound.filepath, strip.id_data)
    elif strip.type == 'IMAGE':
        directory = bpy.path.abspath(strip.directory, library=strip.id_data.library)
        names = [element.filename for element in strip.elements]
        media = [_file(os.path.join(directory, names[0])) if names else None, len(names),
                 _file(os.path.join(directory, names[-1])) if names else None]
    return [strip.name, strip.type, strip.channel, left, right, int(strip.frame_start),
            getattr(strip, "animation_offset_start", 0), getattr(strip, "animation_offset_end", 0),
            bool(strip.mute), media]


def _output(scene):
    """The frames and pictures a render of ``scene`` gives: range, rate and resolution."""
    render = scene.render
    first, last = ((scene.frame_preview_start, scene.frame_preview_end) if scene.use_preview_range
                   else (scene.frame_start, scene.frame_end))
    return [first, last, render.fps, render.fps_base, render.resolution_x, render.resolution_y,
            render.resolution_percentage]


def _camera(camera):
    return camera.name if camera is not None else None


def _identities(src):
    return [[item.target, (item.object.name if item.object else None) if item.target == 'OBJECT'
             else (item.collection.name if item.collection else None), item.identity] for item in src.identities]


def driving_fingerprint(context, strip=None):
    """The driving footage as the Inputs panel sets it up (``strip``: the strip it stands for, if known)."""
    scene = context.scene
    src = get_settings(scene)
    found = [src.driving_source, src.max_size]
    if src.driving_source == 'CAMERA':
        return found + [_camera(src.driving_camera or scene.camera), _output(scene), src.engine]
    seq_scene = compat.sequencer_scene(context)
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    if editor is None:
        return found
    if src.driving_source == 'STRIP':
        return found + [seq_scene.name, seq_scene.render.fps, seq_scene.render.fps_base,
                        _strip(strip or editor.active_strip)]
    return found + [seq_scene.name, _output(seq_scene), [_strip(s) for s in editor.strips_all]]


def mask_fingerprint(context, driving):
    """The driving mask as set up, for the ``driving`` fingerprint it is made for."""
    scene = context.scene
    src = get_settings(scene)
    found = [src.mask_source, src.mode, src.max_size, driving]
    if src.mask_source == 'IDENTITIES':
        return found + [_camera(src.driving_camera or scene.camera), _identities(src)]
    if src.mask_source == 'MASK_STRIP':
        seq_scene = compat.sequencer_scene(context)
        editor = seq_scene.sequence_editor if seq_scene is not None else None
        return found + [_strip(editor.strips_all.get(src.mask_strip) if editor is not None else None)]
    if src.mask_source == 'FILE':
        return found + [_file(src.mask_file)]
    return found


def reference_fingerprint(context):
    """The reference still as set up, with the mask file attached to it."""
    scene = context.scene
    src = get_settings(scene)
    found = [src.reference_source, src.mode, src.max_size,
             _file(src.reference_mask_file) if src.reference_mask_file.strip() else None]
    if src.reference_source == 'FILE':
        return found + [_file(src.reference_file)]
    if src.reference_source == 'IMAGE':
        image = src.reference_image
        if image is None:
            return found
        return found + [image.name, image.source, bool(image.is_dirty), image.packed_file is not None,
                        _file(image.filepath, image)]
    if src.reference_source == 'STRIP':
        seq_scene = compat.sequencer_scene(context)
        editor = seq_scene.sequence_editor if seq_scene is not None else None
        if editor is None:
            return found
        return found + [seq_scene.frame_current, _strip(editor.active_strip)]
    return found + [_camera(src.reference_camera or scene.camera), scene.frame_current, _output(scene),
                    src.reference_engine, src.reference_mask, _identities(src)]
