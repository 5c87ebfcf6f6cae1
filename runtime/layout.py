# SPDX-License-Identifier: GPL-3.0-or-later
"""The take in the layout: one per shot. Placing a take replaces the shot's current strip and camera plane in place.

A shot has one result channel in the sequencer and at most one camera plane: a new take of a shot takes
the place of the take shown before (same channel, its transform; the plane's same parent and object
transform) instead of stacking on the next free channel. The replaced take stays in the history and on
disk. Callers run this inside one operator, so it is one undo step.
"""

__all__ = (
    "layout_take",
    "place_take",
)

import os

import bpy

from ..props import RESULT_PROP, job_settings
from . import review
from .generation import history_entry_settings, import_job

# Strip settings an artist may have changed on the take shown, carried over to the take replacing it.
_STRIP_LOOK = ("blend_type", "blend_alpha", "mute", "use_flip_x", "use_flip_y", "color_tag")
_TRANSFORM = ("offset_x", "offset_y", "scale_x", "scale_y", "rotation")


def _job_dirs_of_shot(scene, shot):
    return {os.path.normpath(item.job_dir) for item in job_settings.get_job_settings(scene).history
            if item.shot == shot}


def _of(block, job_dirs):
    props = block.get(RESULT_PROP)
    return (props is not None and review.COMPARE_PROP not in block
            and os.path.normpath(props.get("job_dir", "")) in job_dirs)


def shown(scene, seq_scene, shot):
    """``(strips, planes)`` of ``shot`` now in the layout: result strips of ``seq_scene``, planes of ``scene``."""
    job_dirs = _job_dirs_of_shot(scene, shot)
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    strips = sorted((s for s in editor.strips if _of(s, job_dirs)), key=lambda s: s.channel) if editor else []
    planes = [o for o in scene.objects if _of(o, job_dirs)]
    return strips, planes


def layout_take(scene, seq_scene, shot):
    """The history entry of the take ``shot`` shows in the layout now, or None."""
    strips, planes = shown(scene, seq_scene, shot)
    for block in strips + planes:
        job_dir = os.path.normpath(block[RESULT_PROP].get("job_dir", ""))
        for item in job_settings.get_job_settings(scene).history:
            if os.path.normpath(item.job_dir) == job_dir:
                return item
    return None


def _form_for(strips, planes, default):
    if strips and planes:
        return 'BOTH'
    if strips:
        return 'STRIP'
    return 'PLANE' if planes else default


def _new_blocks(before_strips, before_objects, seq_scene):
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    strips = [s for s in editor.strips if s.name not in before_strips and RESULT_PROP in s] if editor else []
    objects = [o for o in bpy.data.objects if o.name not in before_objects and RESULT_PROP in o]
    return strips, objects


def _take_place_of_strip(new, old):
    channel = old.channel
    look = {key: getattr(old, key) for key in _STRIP_LOOK if hasattr(old, key)}
    transform = {key: getattr(old.transform, key) for key in _TRANSFORM}
    origin = tuple(old.transform.origin)
    editor = old.id_data.sequence_editor
    editor.strips.remove(old)
    new.channel = channel
    for key, value in look.items():
        setattr(new, key, value)
    for key, value in transform.items():
        setattr(new.transform, key, value)
    new.transform.origin = origin


def _take_place_of_plane(new, old):
    parent, basis = old.parent, old.matrix_basis.copy()
    collections = list(old.users_collection)
    hidden = (old.hide_viewport, old.hide_render)
    for collection in new.users_collection:
        collection.objects.unlink(new)
    for collection in collections:
        collection.objects.link(new)
    new.parent = parent
    new.matrix_parent_inverse = old.matrix_parent_inverse.copy()
    new.matrix_basis = basis
    new.hide_viewport, new.hide_render = hidden
    bpy.data.objects.remove(old)


def place_take(scene, seq_scene, item, undo=False):
    """Make ``item`` the take its shot shows: imported, in the place of the shot's current strip and plane.

    Returns the replaced take's entry (None when the shot showed nothing or showed this take already).
    RuntimeError (the import's message) leaves the layout as it was.
    """
    strips, planes = shown(scene, seq_scene, item.shot)
    current = layout_take(scene, seq_scene, item.shot)
    if current is not None and current.as_pointer() == item.as_pointer():
        return None
    _spec, import_settings, _ui = history_entry_settings(item)
    form = _form_for(strips, planes, import_settings.get("form", 'STRIP'))
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    before_strips = {s.name for s in editor.strips} if editor is not None else set()
    before_objects = {o.name for o in bpy.data.objects}
    import_job(scene, seq_scene, item.manifest, dict(import_settings, form=form), undo=undo)
    new_strips, new_planes = _new_blocks(before_strips, before_objects, seq_scene)
    for new, old in zip(new_strips, strips):
        _take_place_of_strip(new, old)
    for new, old in zip(new_planes, planes):
        _take_place_of_plane(new, old)
    # Takes stacked by earlier versions of the add-on: muted, so only the placed take shows.
    for old in strips[len(new_strips):]:
        old.mute = True
    for old in planes[len(new_planes):]:
        old.hide_render = old.hide_viewport = True
    return current
