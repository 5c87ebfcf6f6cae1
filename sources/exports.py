# SPDX-License-Identifier: GPL-3.0-or-later
"""A job's inputs exported as the Inputs panel sets them up, into the scene's inputs folder.

One function per input (:func:`export_driving`, :func:`export_masks`,
:func:`export_reference`), each returning ``(level, message)`` for the artist
or raising ``ExportError`` with one line, and each recorded in the folder's
``inputs.json`` (``core.inputs``). The Export operators, Generate, Auto Masks
and Refine Masks all come here, so an input is exported the same way whoever
asks for it.
"""

__all__ = (
    "driving_problem",
    "export_driving",
    "export_masks",
    "export_missing",
    "export_reference",
    "export_views",
    "footage_behind",
    "frame_range",
    "inputs_folder",
    "iter_export_missing",
    "mask_strip",
    "preview_mask",
    "record_check",
    "stale_exports",
)

import functools
import inspect
import os
import re

import bpy

from .. import compat
from .. import preferences
from ..core.extra_views import EXTRA_VIEWS
from ..core.inputs import (
    MADE_FROM,
    PALETTE_NAMES,
    ExportError,
    ExportedClip,
    backgrounds,
    load_inputs,
    save_inputs,
    stale_inputs,
)
from ..props import MASKS_PROP, RESULT_PROP
from ..props.input_settings import get_settings
from .extra_views import export_extra_views, iter_export_extra_views, views_fingerprint
from .fingerprints import driving_fingerprint, mask_fingerprint, reference_fingerprint
from .footage import iter_export_sequencer_range, iter_export_strip, iter_render_camera_clip
from .masks import (
    NO_MASK,
    check_identities,
    export_mask_file,
    iter_export_mask_strip,
    iter_render_driving_masks,
    preview_mask_strip,
    render_identity_frames,
)
from .render import drain
from .reference import (
    attach_reference_mask,
    reference_from_file,
    reference_from_image,
    reference_from_strip,
    render_reference,
)

INPUTS_SUBDIR = "inputs"
# The entries of inputs.json an export writes.
DRIVING, DRIVING_MASK, REFERENCE = "driving", "driving_mask", "reference"


def _safe_name(name):
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "scene"


def inputs_folder(context, scene):
    """Where exports for ``scene`` go: its chosen inputs folder, else ``<output>/inputs/<blend>_<scene>``.

    An unsaved file has no name of its own: ``untitled-<process>-<scene>`` keeps two sessions (or two new
    files of one session) from reading each other's exports.
    """
    chosen = get_settings(scene).inputs_dir.strip()
    if chosen:
        return os.path.normpath(bpy.path.abspath(chosen))
    blend = os.path.splitext(os.path.basename(bpy.data.filepath))[0]
    if not blend:
        blend = "untitled-{:d}-{:x}".format(os.getpid(), scene.as_pointer())
    output = preferences.effective_output_dir(preferences.get_preferences(context))
    return os.path.join(output, INPUTS_SUBDIR, _safe_name(blend + "_" + scene.name))


def frame_range(scene):
    """The scene's preview range when it is on, else its frame range: ``(first, last)``."""
    if scene.use_preview_range:
        return scene.frame_preview_start, scene.frame_preview_end
    return scene.frame_start, scene.frame_end


def record_check(scene, folder):
    """Run the identity check on what ``folder`` holds; store and return ``(ok, line)``."""
    inputs = load_inputs(folder)
    inputs["mode"] = get_settings(scene).mode  # the mode the job will be run in
    ok, line = check_identities(inputs)
    get_settings(scene).last_check = line
    return ok, line


def footage_behind(editor, strip):
    """The footage strip ``strip`` stands for: itself, or for an imported result or an Auto Masks strip the
    footage it was made from (None when that strip is gone)."""
    for key, name in ((RESULT_PROP, "driving_strip"), (MASKS_PROP, "footage_strip")):
        if strip is not None and key in strip:
            strip = editor.strips_all.get(strip[key].get(name, ""))
    return strip


def mask_strip(context, src):
    """``(sequencer scene, the Inputs' mask strip or None)``."""
    seq_scene = compat.sequencer_scene(context)
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    strip = editor.strips_all.get(src.mask_strip) if editor is not None and src.mask_strip else None
    return seq_scene, strip


def _cannot_write(context, ex):
    where = ex.filename or inputs_folder(context, context.scene)
    return ExportError("Cannot write the inputs to {!s}: {:s}".format(where, ex.strerror or str(ex)))


def _files_as_one_line(export):
    """An export whose folder cannot be written (read-only, not a folder, disk full) fails with one line."""
    if inspect.isgeneratorfunction(export):
        @functools.wraps(export)
        def steps(context, *args, **kwargs):
            try:
                return (yield from export(context, *args, **kwargs))
            except OSError as ex:
                raise _cannot_write(context, ex) from None
        return steps

    @functools.wraps(export)
    def wrapper(context, *args, **kwargs):
        try:
            return export(context, *args, **kwargs)
        except OSError as ex:
            raise _cannot_write(context, ex) from None
    return wrapper


# --------------------------------------------------------------------------------------------
# One input each.

def driving_problem(context):
    """Why the driving footage cannot be exported as set up, or "" (also the Export Driving button's poll)."""
    settings = get_settings(context.scene)
    if settings.driving_source == 'CAMERA':
        if (settings.driving_camera or context.scene.camera) is None:
            return "Choose a driving camera (or give the scene a camera)"
        return ""
    scene = compat.sequencer_scene(context)
    if scene is None or scene.sequence_editor is None or not len(scene.sequence_editor.strips):
        # An empty sequencer renders the 3D scene instead, which Blender refuses without a camera.
        return "The sequencer has no strips"
    if settings.driving_source == 'STRIP' and scene.sequence_editor.active_strip is None:
        return "Make the driving footage the active strip"
    return ""


def export_driving(context, strip=None):
    """The driving footage: ``strip`` (default: the active strip), the sequencer output or a camera's view."""
    return drain(iter_export_driving(context, strip))


@_files_as_one_line
def iter_export_driving(context, strip=None):
    """:func:`export_driving` a frame at a time (see ``render.drain``)."""
    problem = driving_problem(context)
    if problem:
        raise ExportError(problem)
    scene = context.scene
    settings = get_settings(scene)
    folder = inputs_folder(context, scene)
    target = os.path.join(folder, "driving")
    if settings.driving_source == 'CAMERA':
        start, end = frame_range(scene)
        clip = yield from iter_render_camera_clip(
            scene, settings.driving_camera or scene.camera, start, end, target,
            engine=settings.engine, max_size=settings.max_size,
        )
    else:
        seq_scene = compat.sequencer_scene(context)
        if settings.driving_source == 'STRIP':
            clip = yield from iter_export_strip(
                seq_scene, strip or seq_scene.sequence_editor.active_strip, target, max_size=settings.max_size)
        else:
            start, end = frame_range(seq_scene)
            clip = yield from iter_export_sequencer_range(seq_scene, start, end, target, max_size=settings.max_size)
    # A mask made for other driving frames no longer lines up.
    save_inputs(folder, driving=clip, driving_mask=None, driving_mask_mode=None, mode=settings.mode,
                made_from={DRIVING: driving_fingerprint(context, strip)})
    return 'INFO', clip.note


def export_masks(context):
    """The driving mask for the exported driving footage, then the identity check."""
    return drain(iter_export_masks(context))


@_files_as_one_line
def iter_export_masks(context):
    """:func:`export_masks` a frame at a time (see ``render.drain``)."""
    scene = context.scene
    settings = get_settings(scene)
    folder = inputs_folder(context, scene)
    inputs = load_inputs(folder)
    if not inputs.get("driving"):
        raise ExportError("Export the driving footage first")
    driving = ExportedClip.from_dict(inputs["driving"])
    target = os.path.join(folder, "driving_mask")
    source = settings.mask_source
    if source == 'NONE':
        save_inputs(folder, driving_mask=None, driving_mask_mode=None, mode=settings.mode)
        mask, note = None, NO_MASK
    elif source == 'IDENTITIES':
        camera = settings.driving_camera or scene.camera
        mask = yield from iter_render_driving_masks(scene, camera, driving, target, settings.mode,
                                                    max_size=settings.max_size)
        note = mask.note
    elif source == 'MASK_STRIP':
        seq_scene, strip = mask_strip(context, settings)
        if strip is None:
            raise ExportError("No strip named {:s} in the sequencer".format(settings.mask_strip or '""'))
        mask = yield from iter_export_mask_strip(seq_scene, strip, driving, target, settings.mode,
                                                 max_size=settings.max_size)
        note = mask.note
    else:
        mask = export_mask_file(settings.mask_file, driving)
        note = mask.note
    if mask is not None:
        made_for = None if source == 'FILE' else settings.mode  # a file's backgrounds are its own
        made_from = mask_fingerprint(context, (inputs.get(MADE_FROM) or {}).get(DRIVING))
        save_inputs(folder, driving_mask=mask, driving_mask_mode=made_for, mode=settings.mode,
                    made_from={DRIVING_MASK: made_from})
    if load_inputs(folder).get("reference"):
        ok, line = record_check(scene, folder)
        return ('INFO' if ok else 'WARNING'), "{:s}. {:s}".format(note, line)
    return 'INFO', note


@_files_as_one_line
def export_reference(context):
    """The reference still as chosen in the Inputs panel, with its mask where it has one; then the check."""
    scene = context.scene
    settings = get_settings(scene)
    folder = inputs_folder(context, scene)
    target = os.path.join(folder, "reference")
    source = settings.reference_source
    if source == 'FILE':
        still = reference_from_file(settings.reference_file)
    elif source == 'IMAGE':
        still = reference_from_image(settings.reference_image, target)
    elif source == 'STRIP':
        seq_scene = compat.sequencer_scene(context)
        editor = seq_scene.sequence_editor if seq_scene is not None else None
        if editor is None or editor.active_strip is None:
            raise ExportError("Make the reference picture the active strip")
        still = reference_from_strip(
            seq_scene, editor.active_strip, seq_scene.frame_current, target, max_size=settings.max_size)
    else:
        camera = settings.reference_camera or scene.camera
        still = render_reference(
            scene, camera, target, settings.mode, engine=settings.reference_engine,
            max_size=settings.max_size, with_mask=settings.reference_mask,
        )
    made_for = settings.mode if still.mask_path else None
    if source != 'CAMERA' and settings.reference_mask_file.strip():
        still, made_for = attach_reference_mask(still, settings.reference_mask_file)
    save_inputs(folder, reference=still, reference_mask_mode=made_for, mode=settings.mode,
                made_from={REFERENCE: reference_fingerprint(context)})
    ok, line = record_check(scene, folder)
    return ('INFO' if ok else 'WARNING'), "{:s}. {:s}".format(still.note, line)


@_files_as_one_line
def export_views(context):
    """The Extra Views list (views whose source is unchanged are kept); then the identity check."""
    folder = inputs_folder(context, context.scene)
    level, note = export_extra_views(context, folder)
    if level == 'INFO' and load_inputs(folder).get(REFERENCE):
        ok, line = record_check(context.scene, folder)
        return ('INFO' if ok else 'WARNING'), "{:s}. {:s}".format(note, line)
    return level, note


@_files_as_one_line
def preview_mask(context):
    """Render the driving mask at the current frame (the identities, or the mask strip) for the Inputs panel."""
    scene = context.scene
    src = get_settings(scene)
    folder = inputs_folder(context, scene)
    if src.mask_source == 'MASK_STRIP':
        seq_scene, strip = mask_strip(context, src)
        path, found = preview_mask_strip(seq_scene, strip, seq_scene.frame_current,
                                         os.path.join(folder, "mask_preview"), src.mode, max_size=src.max_size)
        counts, warnings = [{"identities": found}], []
    else:
        path = os.path.join(folder, "mask_preview.png")
        counts, warnings = render_identity_frames(scene, src.driving_camera or scene.camera, [scene.frame_current],
                                                  [path], backgrounds(src.mode)[0], max_size=src.max_size)
    src.mask_preview = path
    found = sorted(counts[0]["identities"])
    names = ", ".join("{:d} ({:s})".format(i, PALETTE_NAMES[i - 1]) for i in found) or "none"
    return ('WARNING' if warnings else 'INFO'), "; ".join(["Identities in view: " + names, *warnings])


# --------------------------------------------------------------------------------------------
# Everything a job needs.

def _driving_strip(context):
    """The strip to export as driving footage: the active strip, or the footage an imported result or an Auto
    Masks strip was made from (importing makes the result the active strip; the next job means its footage)."""
    if get_settings(context.scene).driving_source != 'STRIP':
        return None
    seq_scene = compat.sequencer_scene(context)
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    active = editor.active_strip if editor is not None else None
    return footage_behind(editor, active) if active is not None else None


def stale_exports(context, inputs):
    """The inputs Generate exports again: not exported yet, or their source changed since (see ``fingerprints``);
    in export order."""
    settings = get_settings(context.scene)
    driving = driving_fingerprint(context, _driving_strip(context))
    current = {DRIVING: driving, REFERENCE: reference_fingerprint(context)}
    if settings.mask_source != 'NONE':
        current[DRIVING_MASK] = mask_fingerprint(context, driving)
    stale = set(stale_inputs(inputs, current))
    if settings.mask_source == 'NONE' and inputs.get(DRIVING_MASK):
        stale.add(DRIVING_MASK)  # a mask exported before would still be used
    if DRIVING in stale and settings.mask_source != 'NONE':
        stale.add(DRIVING_MASK)  # made for other driving frames
    views = views_fingerprint(context)
    if (views or inputs.get(EXTRA_VIEWS)) and stale_inputs(inputs, {EXTRA_VIEWS: views}):
        stale.add(EXTRA_VIEWS)  # a view added, removed or changed, or views left over from before
    return [key for key in (DRIVING, DRIVING_MASK, REFERENCE, EXTRA_VIEWS) if key in stale]


# What each input is called in progress and error lines.
INPUT_NAMES = {DRIVING: "driving footage", DRIVING_MASK: "masks", REFERENCE: "reference",
               EXTRA_VIEWS: "extra views"}


def rendered_input_names(context, keys):
    """What rendering the inputs ``keys`` renders, by name: with Masks = None a mask exported before is only
    dropped (nothing is rendered), so "masks" is not named."""
    no_masks = get_settings(context.scene).mask_source == 'NONE'
    return [INPUT_NAMES[key] for key in keys if not (key == DRIVING_MASK and no_masks)]


def exports_needed(context, everything):
    """The inputs a job needs exported, in order: what it lacks or what changed since it was exported (with
    ``everything``: all of them)."""
    if everything:
        masks = get_settings(context.scene).mask_source != 'NONE'
        views = views_fingerprint(context) or load_inputs(inputs_folder(context, context.scene)).get(EXTRA_VIEWS)
        return [DRIVING, *([DRIVING_MASK] if masks else []), REFERENCE, *([EXTRA_VIEWS] if views else [])]
    return stale_exports(context, load_inputs(inputs_folder(context, context.scene)))


def export_missing(context, everything):
    """Export what a job lacks or what changed since (:func:`exports_needed`); ExportError if one fails."""
    return drain(iter_export_missing(context, exports_needed(context, everything)))


def iter_export_missing(context, keys):
    """Export the inputs ``keys`` in order, a frame at a time: yields ``(input name, frames done, frames in
    all)`` of the input being rendered. ExportError names the input that failed.

    Closed before its end (Cancel), the input being rendered is dropped from ``inputs.json``: its folder
    was emptied for the new frames, so the next Generate exports it again.
    """
    for key in keys:
        what = INPUT_NAMES[key]
        try:
            if key == DRIVING:
                yield from _named(what, iter_export_driving(context, _driving_strip(context)))
            elif key == DRIVING_MASK:
                yield from _named(what, iter_export_masks(context))
            elif key == EXTRA_VIEWS:
                yield from _named(what, _files_as_one_line(iter_export_extra_views)(
                    context, inputs_folder(context, context.scene)))
            else:
                export_reference(context)  # one still: no pause is needed
                yield what, 1, 1
        except ExportError as ex:
            raise ExportError("Could not export the {:s}: {!s}".format(what, ex)) from None
        except GeneratorExit:
            try:
                save_inputs(inputs_folder(context, context.scene), **{key: None})
            except OSError:
                pass  # the folder went away or cannot be written: nothing records the partial export
            raise


def _named(what, steps):
    """``steps`` (an export's ``(done, total)``) as ``(what, done, total)``, closed with it: a cancel removes
    the export's temporary scene at once."""
    try:
        for done, total in steps:
            yield what, done, total
    finally:
        steps.close()
