# SPDX-License-Identifier: GPL-3.0-or-later
"""Comparing two takes (or a take and its driving footage) in the sequencer, with Blender's own strips.

A compare is three strips above everything else: take A, take B (or a copy of the driving strip) and a
Wipe effect strip of the two with its fader held at the middle. Both sides are timed against the same
driving strip, so each scene frame shows the same moment of the shot on both. Toggling turns the wipe
into side by side: the wipe is muted and A and B are halved by their transforms, left and right. The
result strips below are muted while the compare stands and unmuted when it ends; ending removes only
the compare's own strips.
"""

__all__ = (
    "end",
    "flag_scene_frames",
    "parts",
    "set_mode",
    "start",
)

import bpy

from .. import compat
from ..core import takes
from ..props import RESULT_PROP
from . import review
from .generation import history_entry_settings, import_job
from .review import COMPARE_PROP

WIPE_NAME = "SCAIL Compare Wipe"
_TRANSFORM = ("scale_x", "scale_y", "offset_x", "offset_y")


def parts(seq_scene):
    """``{"A": strip, "B": strip, "WIPE": strip}`` of the compare standing in ``seq_scene`` (empty: none)."""
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    found = {}
    for strip in editor.strips if editor is not None else ():
        props = strip.get(COMPARE_PROP)
        if props is not None:
            found[props["role"]] = strip
    return found


def end(seq_scene):
    """Remove the compare's strips and unmute what it muted; whether there was a compare."""
    found = parts(seq_scene)
    if not found:
        return False
    editor = seq_scene.sequence_editor
    muted = list(found["A"][COMPARE_PROP].get("muted", ())) if "A" in found else []
    for role in ("WIPE", "B", "A"):
        if role in found:
            editor.strips.remove(found[role])
    for name in muted:
        strip = editor.strips.get(name)
        if strip is not None:
            strip.mute = False
    return True


def _import_strip(scene, seq_scene, item):
    """A new strip of ``item``'s frames, timed as its import was (the driving strip's timing)."""
    _spec, import_settings, _ui = history_entry_settings(item)
    editor = seq_scene.sequence_editor
    before = {s.name for s in editor.strips} if editor is not None else set()
    import_job(scene, seq_scene, item.manifest, dict(import_settings, form='STRIP'))
    return next(s for s in seq_scene.sequence_editor.strips if s.name not in before and RESULT_PROP in s)


def _driving_copy(seq_scene, item):
    """A copy of the driving strip ``item`` was timed against (the artist's strip itself is left alone)."""
    _spec, import_settings, _ui = history_entry_settings(item)
    result = review.layout_strips(seq_scene, item.job_dir)
    name = import_settings.get("driving_strip", "")
    driving = seq_scene.sequence_editor.strips.get(name) if name else None
    if driving is None and result:
        driving = seq_scene.sequence_editor.strips.get(result[0][RESULT_PROP].get("driving_strip", ""))
    if driving is None or driving.type != 'MOVIE':
        raise RuntimeError("Take {:s} was not placed against a movie strip: compare it with another take".format(
            item.name))
    strips = seq_scene.sequence_editor.strips
    copy = strips.new_movie("SCAIL Compare Driving", bpy.path.abspath(driving.filepath), driving.channel,
                            int(compat.strip_content_start(driving)), fit_method='ORIGINAL')
    copy.animation_offset_start = driving.animation_offset_start
    copy.animation_offset_end = driving.animation_offset_end
    compat.set_strip_handles(copy, *compat.strip_handles(driving))
    for key in ("scale_x", "scale_y", "offset_x", "offset_y", "rotation"):
        setattr(copy.transform, key, getattr(driving.transform, key))
    copy.transform.origin = tuple(driving.transform.origin)
    copy.use_flip_x, copy.use_flip_y = driving.use_flip_x, driving.use_flip_y
    return copy


def start(scene, seq_scene, item_a, item_b=None, mode='WIPE'):
    """Compare take ``item_a`` with take ``item_b`` (None: the driving footage). RuntimeError says why not."""
    end(seq_scene)
    if seq_scene.sequence_editor is None:
        seq_scene.sequence_editor_create()
    editor = seq_scene.sequence_editor
    made = []
    try:
        a = _import_strip(scene, seq_scene, item_a)
        made.append(a)
        b = _import_strip(scene, seq_scene, item_b) if item_b is not None else _driving_copy(seq_scene, item_a)
        made.append(b)
        first = max(compat.strip_handles(a)[0], compat.strip_handles(b)[0])
        last = min(compat.strip_handles(a)[1], compat.strip_handles(b)[1])
        if first >= last:
            raise RuntimeError("The two sides share no frame of the shot")
        for side in (a, b):  # both sides end where the compare does (the driving copy is the whole clip)
            compat.set_strip_handles(side, first, last)
        top = max((s.channel for s in editor.strips if s not in made), default=0) + 1
        a.channel, b.channel = top, top + 1
        wipe = compat.new_effect_strip(editor.strips, WIPE_NAME, 'WIPE', top + 2, first, last, input1=a, input2=b)
        made.append(wipe)
    except BaseException:
        for strip in reversed(made):
            editor.strips.remove(strip)
        raise
    wipe.use_default_fade = False
    wipe.effect_fader = 0.5  # held at the middle: half A, half B, on every frame
    wipe.transition_type = 'SINGLE'
    muted = [s.name for s in editor.strips if RESULT_PROP in s and s not in made and not s.mute]
    for name in muted:
        editor.strips[name].mute = True
    labels = {"A": item_a.name, "B": item_b.name if item_b is not None else "driving footage"}
    for role, strip in (("A", a), ("B", b), ("WIPE", wipe)):
        props = {"role": role, "label": labels.get(role, ""),
                 "full": [getattr(strip.transform, key) for key in _TRANSFORM]}
        if role == "A":
            props["muted"] = muted
        strip[COMPARE_PROP] = props
    set_mode(seq_scene, mode)
    editor.active_strip = wipe
    return parts(seq_scene)


def set_mode(seq_scene, mode):
    """``'WIPE'``: the wipe shows A and B split at the middle; ``'SIDE'``: A left, B right, halved."""
    found = parts(seq_scene)
    if not found:
        return False
    half_width = seq_scene.render.resolution_x / 4.0
    for role, side in (("A", -1.0), ("B", 1.0)):
        strip = found[role]
        scale_x, scale_y, offset_x, offset_y = strip[COMPARE_PROP]["full"]
        if mode == 'SIDE':
            scale_x, scale_y, offset_x = scale_x / 2.0, scale_y / 2.0, offset_x / 2.0 + side * half_width
            offset_y /= 2.0
        for key, value in zip(_TRANSFORM, (scale_x, scale_y, offset_x, offset_y)):
            setattr(strip.transform, key, value)
    found["A"].blend_type = 'REPLACE' if mode == 'SIDE' else 'ALPHA_OVER'
    found["B"].blend_type = 'ALPHA_OVER'
    found["WIPE"].mute = mode == 'SIDE'
    return True


def mode_of(seq_scene):
    found = parts(seq_scene)
    if not found:
        return None
    return 'SIDE' if found["WIPE"].mute else 'WIPE'


def flag_scene_frames(seq_scene, item):
    """``[(scene frame, reason)]`` of the take's flagged frames (from its manifest's scores), in order."""
    scores, _problem = review.take_scores(item.manifest)
    frame_map = review.scene_frame_map(seq_scene, item)
    return [(frame_map[frame], reason) for frame, reason in takes.flag_frames(scores) if frame in frame_map]

