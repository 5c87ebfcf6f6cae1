# SPDX-License-Identifier: GPL-3.0-or-later
"""Extra views exported for a job: each view's still and colour mask, in the inputs folder.

A view comes from the sources of the reference (``.reference``) or from a turnaround around a
character object (``.turnaround``), and always leaves with a mask file, so the job's
``extra_references`` and ``extra_reference_masks`` pair up (the backend takes one mask per view or
none): a mask file the artist painted, the identities rendered through the view's camera (as the
driving masks are rendered), or the view's alpha as one identity. Views are recorded in
``inputs.json`` under ``extra_references`` with one fingerprint each (``made_from``); exporting again
renders only the views whose source changed.
"""

__all__ = (
    "add_view",
    "export_extra_views",
    "iter_export_extra_views",
    "views_fingerprint",
)

import json
import os

from .. import compat
from ..core.extra_views import EXTRA_VIEWS, MAX_EXTRA_VIEWS, view_identity_problem
from ..core.inputs import MADE_FROM, ExportError, ExportedStill, backgrounds, identity_names, load_inputs, save_inputs
from ..core.pixels import coverage, fill, interleave, write_png
from ..props.extra_views import get_extra_views
from ..props.input_settings import assigned_objects, get_settings
from .fingerprints import _camera, _file, _identities, _output, _strip
from .reference import (
    REFERENCE_MASK_NAME,
    REFERENCE_NAME,
    attach_reference_mask,
    reference_from_file,
    reference_from_image,
    reference_from_strip,
    render_reference,
)
from .render import drain, output_size, read_pixels
from .turnaround import degrees, turnaround_camera

VIEWS_SUBDIR = "extra_views"
ALPHA_MASK_NAME = "alpha_mask.png"


# --------------------------------------------------------------------------------------------
# What each view is made from.

def _view_fingerprint(context, view):
    scene = context.scene
    src = get_settings(scene)
    found = [view.source, src.mode, src.max_size, view.mask_source, view.identity,
             _file(view.mask_file) if view.mask_source == 'FILE' and view.source not in {'CAMERA', 'TURNAROUND'}
             else None]
    if view.source == 'FILE':
        return found + [_file(view.file)]
    if view.source == 'IMAGE':
        image = view.image
        return found + ([image.name, image.source, bool(image.is_dirty), image.packed_file is not None,
                         _file(image.filepath, image)] if image is not None else [None])
    if view.source == 'STRIP':
        seq_scene = compat.sequencer_scene(context)
        editor = seq_scene.sequence_editor if seq_scene is not None else None
        return found + [view.frame, _strip(editor.strips_all.get(view.strip) if editor is not None else None)]
    where = _camera(view.camera) if view.source == 'CAMERA' else [
        view.target.name if view.target is not None else None, round(view.angle, 6)]
    return found + [where, view.frame, _output(scene), view.engine, _identities(src), view.take]


def views_fingerprint(context):
    """One fingerprint per view of the Extra Views list, in its order (plain JSON data)."""
    return [_view_fingerprint(context, view) for view in get_extra_views(context.scene).views]


# --------------------------------------------------------------------------------------------
# One view.

def _alpha_mask(still, path, identity, mode):
    """Give ``still`` a mask file: its alpha (the whole picture when it has none) as ``identity``."""
    pixels, width, height = read_pixels(still.path)
    shown = coverage(pixels[3:], channels=4)  # the alpha channel as the first of each pixel's four
    planes = fill(shown.translate(bytes((0, identity)) + bytes(254)), backgrounds(mode)[1])
    write_png(path, width, height, interleave(planes), channels=3)
    still.mask_path = path
    still.identities = [identity] if 1 in shown else []
    still.note += "; alpha as identity " + identity_names([identity])
    return still


def _render_view(scene, view, camera, target, mode, max_size):
    """A camera or turnaround view: rendered with a transparent background, its mask the assigned identities."""
    still = render_reference(scene, camera, target, mode, engine=view.engine, frame=view.frame,
                             max_size=max_size, with_mask=True)
    if view.source == 'TURNAROUND':
        still.source = '{:s} at {:d} degrees, frame {:d}'.format(view.target.name, degrees(view.angle), view.frame)
    return still


def _export_view(context, view, target, mode, max_size):
    """The still of ``view`` with its mask, written under ``target`` where it is rendered or saved."""
    scene = context.scene
    if view.source == 'FILE':
        still = reference_from_file(view.file)
    elif view.source == 'IMAGE':
        still = reference_from_image(view.image, target)
    elif view.source == 'STRIP':
        seq_scene = compat.sequencer_scene(context)
        editor = seq_scene.sequence_editor if seq_scene is not None else None
        strip = editor.strips_all.get(view.strip) if editor is not None and view.strip else None
        if strip is None:
            raise ExportError("No strip named {:s} in the sequencer".format(view.strip or '""'))
        still = reference_from_strip(seq_scene, strip, view.frame, target, max_size=max_size)
    elif view.source == 'CAMERA':
        if view.camera is None:
            raise ExportError("Choose the camera the view is rendered through")
        still = _render_view(scene, view, view.camera, target, mode, max_size)
    else:
        owners = assigned_objects(scene)[0]
        if view.target is None:
            raise ExportError("Choose the character object of the turnaround")
        if view.target not in owners:
            raise ExportError("Assign {:s} an identity (Identities list) so its turnaround views get a mask".format(
                view.target.name))
        width, height = output_size(scene, max_size)
        with turnaround_camera(scene, view.target, view.angle, width / height) as camera:
            still = _render_view(scene, view, camera, target, mode, max_size)
    if still.mask_path:
        return still  # rendered with the identities
    if view.mask_source == 'FILE' and view.source not in {'CAMERA', 'TURNAROUND'}:
        still, made_for = attach_reference_mask(still, view.mask_file)
        if made_for != mode:
            raise ExportError("The mask {:s} is painted for {:s} mode (its background), the job is in {:s} mode".format(
                os.path.basename(view.mask_file), made_for, mode))
        return still
    os.makedirs(target, exist_ok=True)
    return _alpha_mask(still, os.path.join(target, ALPHA_MASK_NAME), view.identity, mode)


# --------------------------------------------------------------------------------------------
# The list.

def _unlink_earlier(target):
    """Remove the files an earlier export of this view wrote in ``target`` (only ours, by name) before new
    ones are written: Blender writes a render into an existing file in place, and a farm bundle sent before
    holds hard links to these files (backend/farm/bundle.py), so writing over them would change the bundle."""
    for name in (REFERENCE_NAME, REFERENCE_MASK_NAME, ALPHA_MASK_NAME):
        try:
            os.remove(os.path.join(target, name))
        except FileNotFoundError:
            pass

def _reusable(inputs, index, fingerprint):
    """The view exported before at ``index`` from the same source, when its files are still there."""
    recorded = inputs.get(EXTRA_VIEWS) or []
    made_from = (inputs.get(MADE_FROM) or {}).get(EXTRA_VIEWS) or []
    if index >= min(len(recorded), len(made_from)) or made_from[index] != json.loads(json.dumps(fingerprint)):
        return None
    still = ExportedStill.from_dict(recorded[index])
    return still if os.path.isfile(still.path) and os.path.isfile(still.mask_path) else None


def iter_export_extra_views(context, folder):
    """Export the Extra Views list into ``folder`` a view at a time, yielding ``(views done, views in all)``;
    views whose source is unchanged since their export are kept. Returns ``(level, message)``.

    ExportError names the view that failed; nothing is recorded then.
    """
    scene = context.scene
    views = list(get_extra_views(scene).views)
    if len(views) > MAX_EXTRA_VIEWS:
        raise ExportError("A job takes at most {:d} extra views; the list has {:d}".format(MAX_EXTRA_VIEWS, len(views)))
    src = get_settings(scene)
    inputs = load_inputs(folder)
    stills, fingerprints, rendered = [], [], 0
    for index, view in enumerate(views):
        fingerprint = _view_fingerprint(context, view)
        still = _reusable(inputs, index, fingerprint)
        if still is None:
            target = os.path.join(folder, VIEWS_SUBDIR, "view_{:02d}".format(index + 1))
            _unlink_earlier(target)
            try:
                still = _export_view(context, view, target, src.mode, src.max_size)
            except ExportError as ex:
                raise ExportError("Extra view {:d}: {!s}".format(index + 1, ex)) from None
            rendered += 1
        stills.append(still.to_dict())
        fingerprints.append(fingerprint)
        yield index + 1, len(views)
    inputs = save_inputs(folder, made_from={EXTRA_VIEWS: fingerprints} if stills else None,
                         **{EXTRA_VIEWS: stills or None})
    if not stills:
        return 'INFO', "No extra views"
    note = "{:d} extra view{:s} ({:d} exported again, {:d} unchanged)".format(
        len(stills), "" if len(stills) == 1 else "s", rendered, len(stills) - rendered)
    problem = view_identity_problem(inputs)
    return ('WARNING', "{:s}. {:s}".format(note, problem)) if problem else ('INFO', note)


def export_extra_views(context, folder):
    """:func:`iter_export_extra_views` in one go (the Export button, background mode)."""
    return drain(iter_export_extra_views(context, folder))


def add_view(scene, **settings):
    """A new view at the end of the Extra Views list, made active; ExportError when the list is full."""
    extra = get_extra_views(scene)
    if len(extra.views) >= MAX_EXTRA_VIEWS:
        raise ExportError("A job takes at most {:d} extra views".format(MAX_EXTRA_VIEWS))
    view = extra.views.add()
    view.frame = scene.frame_current
    for key, value in settings.items():
        setattr(view, key, value)
    extra.active_index = len(extra.views) - 1
    return view

