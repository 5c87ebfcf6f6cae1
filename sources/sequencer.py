# SPDX-License-Identifier: GPL-3.0-or-later
"""The sequencer side of exports: which strips act on a strip, what a job reads from a folder,
and rendering the sequencer's output from a scene copy with every other strip muted."""

__all__ = (
    "FRAME_NAME",
    "adjustments_above",
    "animated_paths",
    "effects_using",
    "folder_listing",
    "iter_render_sequencer_frames",
    "keep_for",
    "link_or_copy",
    "render_sequencer_frames",
    "sequencer_copy",
    "sequencer_percentage",
    "strip_data_path",
)

import contextlib
import os
import re
import shutil

import bpy
from bpy_extras import anim_utils

from .. import compat
from ..core.inputs import ExportError
from .render import (
    DEFAULT_MAX_SIZE,
    IMAGE_EXTENSIONS,
    drain,
    neutral_colour,
    render_still,
    set_png_output,
    temporary_scene,
)

FRAME_NAME = "frame_{:06d}.png"


def strip_data_path(strip):
    return 'strips_all["{:s}"]'.format(bpy.utils.escape_identifier(strip.name))


def animated_paths(id_data):
    """Data paths animated (by the assigned action slot) or driven on ``id_data``."""
    adt = id_data.animation_data
    if adt is None:
        return set()
    paths = {driver.data_path for driver in adt.drivers}
    if adt.action is not None and adt.action_slot is not None:
        bag = anim_utils.action_get_channelbag_for_slot(adt.action, adt.action_slot)
        if bag is not None:
            paths |= {fcurve.data_path for fcurve in bag.fcurves}
    return paths


def _overlaps(strip, left, right):
    s_left, s_right = compat.strip_handles(strip)
    return s_left < right and left < s_right


def effects_using(scene, strip):
    """Effect strips that take ``strip`` as an input, directly or through other effects."""
    found, todo = [], [strip]
    all_strips = list(scene.sequence_editor.strips_all)
    while todo:
        current = todo.pop()
        for other in all_strips:
            if other in found or other == strip:
                continue
            if getattr(other, "input_1", None) == current or getattr(other, "input_2", None) == current:
                found.append(other)
                todo.append(other)
    return found


def adjustments_above(scene, strip):
    left, right = compat.strip_handles(strip)
    parent = strip.parent_meta()
    return [
        other for other in scene.sequence_editor.strips_all
        if other.type == 'ADJUSTMENT' and not other.mute and other.channel > strip.channel
        and other.parent_meta() == parent and _overlaps(other, left, right)
    ]


def folder_listing(folder):
    """Image files of ``folder`` in the order a job reads them (see backend/pipeline/media.py, _folder_frames)."""
    def natural(name):
        return [int(part) if i % 2 else part.lower() for i, part in enumerate(re.split(r"(\d+)", name))]
    try:
        names = [
            name for name in os.listdir(folder)
            if not name.startswith(".") and os.path.splitext(name)[1].lower() in IMAGE_EXTENSIONS
            and os.path.isfile(os.path.join(folder, name))
        ]
    except OSError:
        return []
    return sorted(names, key=natural)


def link_or_copy(source, target):
    try:
        os.link(source, target)
    except OSError:
        shutil.copyfile(source, target)


def keep_for(scene, strip):
    """Strips to leave playing when baking ``strip``: it, the effects on it and the layers adjusting it."""
    keep = [strip]
    for user in effects_using(scene, strip):
        keep.append(user)
        keep.extend(s for s in (getattr(user, "input_1", None), getattr(user, "input_2", None)) if s is not None)
    keep.extend(adjustments_above(scene, strip))
    return {s.name for s in keep}


def _mute_all_but(copy, keep):
    """In the scene copy, mute every strip that neither is in ``keep`` nor contains or is inside one of them."""
    strips = copy.sequence_editor.strips_all
    ancestors = set()
    for name in keep:
        parent = strips[name].parent_meta()
        while parent is not None:
            ancestors.add(parent.name)
            parent = parent.parent_meta()
    for strip in strips:
        if strip.name in keep or strip.name in ancestors:
            continue
        parent, inside = strip.parent_meta(), False
        while parent is not None and not inside:
            inside = parent.name in keep
            parent = parent.parent_meta()
        if not inside:
            strip.mute = True


def sequencer_percentage(scene, max_size=DEFAULT_MAX_SIZE):
    """The resolution percentage that renders the sequencer's canvas at most ``max_size`` pixels wide and high.

    The canvas (resolution X/Y) itself is never changed for footage: strips are
    placed on it, so a smaller canvas would crop them.
    """
    render = scene.render
    percent = render.resolution_percentage
    longest = max(render.resolution_x, render.resolution_y)
    if max_size and longest * percent / 100 > max_size:
        percent = max(1, int(max_size * 100 // longest))
    return percent


@contextlib.contextmanager
def sequencer_copy(scene, *, keep=None, canvas=None, max_size=DEFAULT_MAX_SIZE, color_mode='RGB'):
    """A copy of ``scene`` set up to render its sequencer output as PNG stills; yields ``(copy, made)``.

    ``keep``: strip names to leave playing (all others are muted in the copy);
    None plays everything. ``canvas``: ``(width, height)`` to render the
    sequencer at instead of the scene's canvas shrunk to ``max_size``.
    Colours are left as they are (Standard view transform).
    """
    if scene.sequence_editor is None:
        raise ExportError("The scene {:s} has no strips".format(scene.name))
    percent = sequencer_percentage(scene, max_size)
    with temporary_scene(scene) as (copy, made):
        if canvas is not None:
            copy.render.resolution_x, copy.render.resolution_y = canvas
        else:
            copy.render.resolution_percentage = percent
        copy.render.use_sequencer = True
        copy.render.film_transparent = color_mode == 'RGBA'
        neutral_colour(copy)
        set_png_output(copy, color_mode)
        # The copy's caches stay as they are: a render after a change to shared data (a mask layer
        # hidden) must invalidate the strip's cache itself (``Strip.invalidate_cache``). Setting
        # SequenceEditor.use_cache_* on a scene other than the window's crashes Blender 5.0.
        if keep is not None:
            _mute_all_but(copy, keep)
        yield copy, made


def render_sequencer_frames(scene, frames, folder, **options):
    """Render the sequencer output of ``scene`` at each of ``frames`` to ``folder``; return the files."""
    return drain(iter_render_sequencer_frames(scene, frames, folder, **options))


def iter_render_sequencer_frames(scene, frames, folder, *, keep=None, canvas=None, max_size=DEFAULT_MAX_SIZE,
                                 name=FRAME_NAME, color_mode='RGB'):
    """:func:`render_sequencer_frames` a frame at a time (see ``render.drain``).

    ``name``: file name pattern, formatted with the frame's position in ``frames``.
    """
    files = []
    with sequencer_copy(scene, keep=keep, canvas=canvas, max_size=max_size, color_mode=color_mode) as (copy, _made):
        for i, frame in enumerate(frames):
            copy.frame_current = frame
            files.append(render_still(copy, os.path.join(folder, name.format(i))))
            yield i + 1, len(frames)
    return files
