# SPDX-License-Identifier: GPL-3.0-or-later
"""Switching what was imported from a result to its matte: RGBA frames in place, one undo step.

Every strip and camera plane imported from that result switches to the RGBA
frames (strip: alpha over; plane: the image's alpha into the shader's,
blended). A result not imported yet gets them when imported.
"""

__all__ = (
    "apply_matte",
    "switch_to_matte",
)

import os

import bpy

from ..core import results, timing
from ..core import segmentation as segmentation_jobs
from ..core.segmentation import SegmentError
from ..props import RESULT_PROP
from ..core.util import with_warnings
from .result_create import use_image_alpha


def apply_matte(job):
    """Use a finished matte job: switch what was imported from its result; ``(level, message)``."""
    info = job.meta["segment"]
    segmentation_jobs.load_record(job.job_dir, "matte")
    result = results.load_result(info["manifest"] or info["job_dir"])
    if not result.matte:
        raise SegmentError(next((w for w in result.warnings if "matte" in w), "The matte is incomplete"))
    switched, problems = switch_to_matte(result)
    if not switched and not problems:
        return 'INFO', "Matte of {:s} ready: importing it brings the RGBA frames".format(result.job_id)
    return with_warnings("Matte of {:s}: {:s} now show the RGBA frames".format(
        result.job_id, ", ".join(switched) or "nothing"), problems)


def _imported_from(block, job_dir):
    props = block.get(RESULT_PROP)
    return props is not None and os.path.normpath(str(props.get("job_dir", ""))) == os.path.normpath(job_dir)


def switch_to_matte(result):
    """Make every strip and camera plane imported from ``result`` (loaded with its matte) show the RGBA frames.

    Returns ``(names switched, one line per item that could not be)``.
    """
    switched, problems = [], []
    folder = os.path.join(result.frames_dir, "")
    for scene in bpy.data.scenes:
        editor = scene.sequence_editor
        for strip in editor.strips_all if editor is not None else ():
            if strip.type == 'IMAGE' and _imported_from(strip, result.job_dir):
                strip.directory = folder
                strip.blend_type = 'ALPHA_OVER'
                strip[RESULT_PROP]["matte"] = True
                switched.append("strip " + strip.name)
    rgb = results.load_result(result.manifest_path, use_matte=False)
    for obj in bpy.data.objects:
        if obj.type == 'MESH' and _imported_from(obj, result.job_dir):
            try:
                _switch_plane(obj, result, rgb)
            except (SegmentError, results.ResultError, OSError) as ex:
                problems.append("plane {:s} kept its frames: {!s}".format(obj.name, ex))
                continue
            switched.append("plane " + obj.name)
    return switched, problems


def _plane_texture(obj):
    material = obj.active_material
    tree = material.node_tree if material is not None else None
    texture = next((n for n in tree.nodes if n.type == 'TEX_IMAGE' and n.image is not None), None) if tree else None
    if texture is None:
        raise SegmentError("its material shows no image")
    return material, tree, texture


def _switch_plane(obj, result, rgb):
    """Point the plane's image at a scene-rate sequence of the RGBA frames with the same timing."""
    material, tree, texture = _plane_texture(obj)
    image = texture.image
    first = os.path.normpath(bpy.path.abspath(image.filepath))
    try:
        names = segmentation_jobs.sequence_sources(first, rgb.frames_dir)
    except SegmentError:
        names = segmentation_jobs.sequence_sources(first, result.frames_dir)  # switched before: an older matte
    index_of = {os.path.basename(frame.path): i for i, frame in enumerate(result.frames)}
    if any(name not in index_of for name in names):
        raise SegmentError("its frames are not the job's")
    timed = timing.TimedFrames(texture.image_user.frame_start, tuple(index_of[name] for name in names[1:]))
    image.filepath = results.ensure_scene_rate_sequence(result, timed)
    image.alpha_mode = 'STRAIGHT'
    image.reload()
    shader = next((n for n in tree.nodes if n.type == 'BSDF_PRINCIPLED'), None)
    if shader is None:
        raise SegmentError("its material has no Principled BSDF")
    use_image_alpha(material, shader, texture, blended=True)
    obj[RESULT_PROP]["matte"] = True
