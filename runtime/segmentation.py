# SPDX-License-Identifier: GPL-3.0-or-later
"""Auto Masks, Refine Masks and Matte inside Blender: segmentation jobs built from the scene, and what they bring.

The operators in ``operators/segmentation.py`` stay thin; this module builds the
jobs (each a ``session.JobRequest``) and uses their results. The jobs run on the
same worker and queue as generations (``runtime.follow.run_job``): Blender never
waits on the model, a timer follows the job, and background mode runs it to its end.

Building:

* :func:`driving_masks_job`: the footage strip (the active strip, else the
  one the driving footage was exported from) is read straight from its file or
  baked by ``sources.export_strip``, as for a job's driving footage; its visible
  range (or the Generate panel's frame limit) is segmented;
* :func:`refined_masks_job` (Refine Masks): the same footage and frames, the
  subjects marked by hand: the Inputs' mask strip (rough masks, one palette
  colour per identity) is exported as for a job and each identity becomes a
  SAM 2 box, where it first appears, scaled to the clip's pixels; the result
  lands as Auto Masks' does, named "<footage> Refined Masks";
* :func:`reference_mask_job`: the reference, exported as for a job, as a still;
* :func:`matte_job`: a finished generation's frames, into ``<job>/frames_rgba``.

Finishing (``runtime.follow`` calls :func:`finish_job`), through the internal
operator ``scail2.apply_segmentation``: one undo step. A failed or cancelled job
never gets here: the scene stays as it was.

* driving masks: an image strip of the mask frames on a free channel above the
  footage strip, each scene frame showing the mask of the footage frame the
  footage strip shows there. It is added muted (it would cover the footage in
  the preview and in the sequencer's output); Preview Mask and the mask export
  read it all the same. It becomes the Inputs' mask strip;
* reference mask: the Inputs' Reference Mask file, and the recorded reference's mask;
* matte: ``runtime.matte``.
"""

__all__ = (
    "apply",
    "driving_masks_job",
    "finish_job",
    "footage_strip",
    "matte_job",
    "reference_mask_job",
    "refined_masks_job",
    "rough_mask_strip",
    "rough_subjects",
)

import dataclasses
import os
from collections import namedtuple

import bpy

from .. import compat
from .. import protocol
from .. import sources
from ..core import results
from ..core import segmentation as segmentation_jobs
from ..core.inputs import ExportedStill, identity_names
from ..core.pixels import identity_boxes
from ..core.segmentation import SegmentError
from ..core.util import operator_error_line, with_warnings
from ..props import MASKS_PROP, input_settings, job_settings
from ..sources.exports import export_reference, footage_behind, inputs_folder, mask_strip
from ..sources.masks import driving_frame_size
from ..sources.render import read_pixels
from .matte import apply_matte
from . import session
from .session import JobRequest, job_meta, job_scenes, scene_overrides

FOOTAGE_SUBDIR = "auto_masks_footage"  # in the inputs folder: footage baked for Auto Masks
NAME_LIMIT = 63  # characters of a strip name
ROUGH_SUBDIR = "refine_masks_rough"  # in the inputs folder: the rough mask Refine Masks read
DRIVING, REFERENCE, MATTE = "driving_masks", "reference_mask", "matte"
AUTO_MASKS, REFINED_MASKS = "Auto Masks", "Refined Masks"  # what the strips of driving masks are called


def _prompt(src):
    prompt = src.auto_mask_prompt.strip()
    if not prompt:
        raise SegmentError("Say what Auto Masks should look for, such as person")
    return prompt


# --------------------------------------------------------------------------------------------
# Building.

def footage_strip(context, not_strip=None):
    """``(sequencer scene, strip)`` Auto Masks works on: the active strip, or the footage it was made from.

    An active strip named ``not_strip`` (Refine Masks' rough mask) is not footage: the recorded driving strip is.
    """
    seq_scene = compat.sequencer_scene(context)
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    if editor is None:
        raise SegmentError("The sequencer has no strips")
    # A result or an auto-mask strip stands for the footage it was made from.
    strip = footage_behind(editor, editor.active_strip)
    if strip is not None and not_strip is not None and strip.name == not_strip:
        strip = None
    if strip is None:
        recorded = sources.load_inputs(inputs_folder(context, context.scene)).get("driving") or {}
        strip = editor.strips_all.get(recorded.get("strip") or "")
    if strip is None:
        raise SegmentError("Make the footage the active strip")
    if strip.type == 'SOUND':
        raise SegmentError("The strip {:s} is a sound strip; choose a strip with pictures".format(strip.name))
    return seq_scene, strip


# What Auto Masks and Refine Masks segment: the footage strip, the inputs folder, its exported clip and timing.
Footage = namedtuple("Footage", "seq_scene strip inputs clip timing")


def _footage_clip(context, rough=None):
    """The ``Footage`` Auto Masks and Refine Masks segment.

    The footage strip (``rough``, the rough mask strip, never stands for it)
    read or baked as for a job; ``timing``: ``(frame_start, frame_end,
    scene_frame_start, shown)`` of its visible range, or of the Generate
    panel's frame limit.
    """
    scene = context.scene
    src = input_settings.get_settings(scene)
    settings = job_settings.get_job_settings(scene)
    seq_scene, strip = footage_strip(context, not_strip=rough)
    inputs = inputs_folder(context, scene)
    clip = sources.export_strip(seq_scene, strip, os.path.join(inputs, FOOTAGE_SUBDIR), max_size=src.max_size)
    timing = clip.frame_start, clip.frame_end, clip.scene_frame_start, list(clip.shown)
    if settings.use_frame_range:
        timing = segmentation_jobs.limit_timing(clip.frame_start, clip.scene_frame_start, clip.shown,
                                           settings.frame_start, settings.frame_end)
    return Footage(seq_scene, strip, inputs, clip, timing)


def _driving_request(context, spec, found, label, name, ui):
    """Queue the masks job ``spec`` of ``found`` (``_footage_clip``'s result); its masks land as ``name``."""
    seq_scene, strip, inputs, clip, timing = found
    frame_start, _frame_end, scene_frame_start, shown = timing
    meta = job_meta(context.scene, seq_scene, {}, ui, label=label)
    meta["segment"] = {
        "kind": DRIVING, "strip": strip.name, "baked": clip.baked, "inputs": inputs, "name": name,
        "frame_start": frame_start, "scene_frame_start": scene_frame_start, "shown": shown,
    }
    return JobRequest(spec, meta, "masks")


def driving_masks_job(context):
    """The masks job of the footage strip, a ``session.JobRequest``."""
    src = input_settings.get_settings(context.scene)
    prompt = _prompt(src)
    found = _footage_clip(context)
    frame_start, frame_end, _first, _shown = found.timing
    spec = segmentation_jobs.masks_spec(found.clip.path, prompt=prompt, mode=src.mode, identities=src.auto_mask_identities,
                                   frame_start=frame_start, frame_end=frame_end)
    return _driving_request(context, spec, found, "Auto Masks: {:s} in {:s}".format(prompt, found.strip.name),
                           AUTO_MASKS, {"prompt": prompt})


def rough_mask_strip(context):
    """``(sequencer scene, strip)``: the Inputs' mask strip, which Refine Masks reads as the rough mask."""
    src = input_settings.get_settings(context.scene)
    if src.mask_source != 'MASK_STRIP':
        raise SegmentError("Set the Inputs' mask to a mask strip: Refine Masks refines its rough masks")
    seq_scene, strip = mask_strip(context, src)
    if strip is None:
        raise SegmentError("No rough mask: there is no strip named {:s}".format(src.mask_strip) if src.mask_strip
                           else "No rough mask: choose the mask strip in the Inputs")
    if strip.type == 'MASK' and strip.mask is not None:
        layers = [layer for layer in strip.mask.layers if not layer.hide_render]
        if len(layers) > protocol.MAX_IDENTITIES:
            raise SegmentError("The rough mask {:s} has {:d} identities (mask layers); SCAIL-2 binds at most {:d}"
                               .format(strip.mask.name, len(layers), protocol.MAX_IDENTITIES))
    return seq_scene, strip


def rough_subjects(seq_scene, rough, clip, timing, folder, mode, max_size):
    """``(subjects, identities)`` of the rough mask strip ``rough`` over ``clip``'s frames in ``timing``.

    The rough mask is exported as for a job (``sources.export_mask_strip``,
    covering the footage's frame) into ``folder``; each identity is marked with
    its box in the first exported frame it appears in, scaled to the clip's pixels.
    """
    frame_start, frame_end, scene_frame_start, shown = timing
    offset = frame_start - clip.frame_start
    part = dataclasses.replace(clip, frame_start=frame_start, frame_end=frame_end,
                               scene_frames=list(clip.scene_frames[offset:offset + frame_end - frame_start]),
                               scene_frame_start=scene_frame_start, shown=list(shown))
    exported = sources.export_mask_strip(seq_scene, rough, part, folder, mode, max_size=max_size)
    wanted, sizes = set(exported.identities), set()

    def frame_boxes():
        seen = set()
        for index in range(frame_start, frame_end):
            pixels, width, height = read_pixels(exported.files[index])
            sizes.add((width, height))
            boxes = identity_boxes(pixels, width, height)
            seen |= set(boxes)
            yield index - frame_start, boxes
            if wanted and wanted <= seen:
                return  # every identity has its first box

    frames = list(frame_boxes())
    mask_size = sizes.pop()
    clip_size = driving_frame_size(clip, 0)  # the clip's own pixels, as the worker reads them
    try:
        return segmentation_jobs.refine_subjects(frames, mask_size, clip_size)
    except SegmentError as ex:
        raise SegmentError("{!s}: {:s}".format(ex, rough.name)) from None


def refined_masks_job(context):
    """A masks job tracking the identities of the rough mask strip (SAM 2, a box each).

    Same footage, frames and landing as Auto Masks; a ``session.JobRequest``.
    """
    src = input_settings.get_settings(context.scene)
    seq_scene, rough = rough_mask_strip(context)
    found = _footage_clip(context, rough=rough.name)
    clip, timing = found.clip, found.timing
    folder = os.path.join(found.inputs, ROUGH_SUBDIR)
    subjects, identities = rough_subjects(seq_scene, rough, clip, timing, folder, src.mode, src.max_size)
    spec = segmentation_jobs.masks_spec(clip.path, prompt="", mode=src.mode, identities=len(subjects),
                                   frame_start=timing[0], frame_end=timing[1], subjects=subjects)
    return _driving_request(context, spec, found, "Refine Masks: {:s} in {:s}".format(rough.name, found.strip.name),
                           REFINED_MASKS, {"rough": rough.name, "identities": identities})


def reference_mask_job(context):
    """Export the reference as for a job; its still masks job."""
    scene = context.scene
    src = input_settings.get_settings(scene)
    prompt = _prompt(src)
    if src.reference_source == 'CAMERA':
        raise SegmentError("A reference rendered through a camera is masked by its alpha or the assigned identities")
    try:
        export_reference(context)
    except sources.ExportError as ex:
        raise SegmentError(str(ex)) from None
    inputs = inputs_folder(context, scene)
    reference = sources.load_inputs(inputs).get("reference")
    if not reference:
        raise SegmentError("The reference could not be exported")
    path = reference["path"]
    spec = segmentation_jobs.masks_spec(path, prompt=prompt, mode=src.mode, identities=src.auto_mask_identities,
                                   still=True)
    meta = job_meta(scene, compat.sequencer_scene(context) or scene, {}, {"prompt": prompt},
                                label="Auto Mask: {:s} in {:s}".format(prompt, os.path.basename(path)))
    meta["segment"] = {"kind": REFERENCE, "reference": path, "inputs": inputs}
    return JobRequest(spec, meta, "masks")


def matte_job(context, item):
    """The matte job of history entry ``item``: its frames, into ``<job>/frames_rgba``."""
    scene = context.scene
    prompt = _prompt(input_settings.get_settings(scene))
    queue = session.get_queue(context, create=False)
    for job in queue.active_jobs() if queue is not None else ():
        if job.task == "matte" and job.meta.get("segment", {}).get("job_dir") == item.job_dir:
            raise SegmentError("The matte of {:s} is being made already".format(item.job_id))
    spec, folder = segmentation_jobs.matte_spec(item.job_dir, prompt)
    meta = job_meta(scene, compat.sequencer_scene(context) or scene, {}, {"prompt": prompt},
                                label="Matte: {:s}".format(item.name or item.job_id))
    meta["segment"] = {"kind": MATTE, "job_dir": item.job_dir, "manifest": item.manifest}
    return JobRequest(spec, meta, "matte", folder)


# --------------------------------------------------------------------------------------------
# Finishing.

def finish_job(job, interactive):
    """A done segmentation job: use its result in its scene (one undo step). Returns ``(level, message)``."""
    meta = job.meta
    scene, seq_scene = job_scenes(meta)
    if scene is None:
        return 'WARNING', "The segmentation job finished, but its scene is no longer open: " + job.job_dir
    meta.pop("applied", None)
    try:
        with bpy.context.temp_override(**scene_overrides(scene, seq_scene)):
            bpy.ops.scail2.apply_segmentation('EXEC_DEFAULT', interactive, job=job.key)
    except RuntimeError as ex:
        return 'ERROR', "{:s} finished but could not be used: {:s}".format(
            meta.get("label", "The job"), operator_error_line(ex))
    return meta.get("applied") or ('ERROR', "{:s} finished but was not used".format(meta.get("label", "The job")))


def apply(job, context):
    """Use the result of the finished segmentation ``job`` in the context's scene; ``(level, message)``."""
    kind = job.meta.get("segment", {}).get("kind")
    if kind == DRIVING:
        return _apply_driving_masks(job, context)
    if kind == REFERENCE:
        return _apply_reference_mask(job, context)
    if kind == MATTE:
        return apply_matte(job)
    raise SegmentError("Unknown segmentation job {!r}".format(kind))


def _strip_name(footage, name=AUTO_MASKS):
    suffix = " " + name
    return footage[:NAME_LIMIT - len(suffix)] + suffix


def _line_up(strip, footage):
    """Give the mask strip the footage strip's placement (masks read directly are the footage's size)."""
    strip.transform.scale_x, strip.transform.scale_y = footage.transform.scale_x, footage.transform.scale_y
    strip.transform.offset_x, strip.transform.offset_y = footage.transform.offset_x, footage.transform.offset_y
    strip.transform.rotation = footage.transform.rotation
    strip.use_flip_x, strip.use_flip_y = footage.use_flip_x, footage.use_flip_y


def _apply_driving_masks(job, context):
    info = job.meta["segment"]
    record = segmentation_jobs.load_record(job.job_dir, "masks")
    first, files = segmentation_jobs.mask_elements(record, info["frame_start"], info["scene_frame_start"], info["shown"])
    seq_scene = compat.sequencer_scene(context) or context.scene
    if seq_scene.sequence_editor is None:
        raise SegmentError("The sequencer scene {:s} has no strips any more".format(seq_scene.name))
    editor = seq_scene.sequence_editor
    footage = editor.strips_all.get(info["strip"])
    lowest = footage.channel + 1 if footage is not None else 1
    end = first + len(files)
    channel = results.free_channel(((s.channel, *compat.strip_handles(s)) for s in editor.strips), lowest, first, end)
    if channel is None:
        raise SegmentError("No free channel above channel {:d} for frames {:d}-{:d}".format(lowest - 1, first, end - 1))
    name = info.get("name", AUTO_MASKS)
    strip = editor.strips.new_image(_strip_name(info["strip"], name), files[0], channel, first, fit_method='FIT')
    try:
        for path in files[1:]:
            strip.elements.append(os.path.basename(path))
        if footage is not None and not info["baked"]:
            _line_up(strip, footage)
        strip.mute = True
        strip[MASKS_PROP] = {"footage_strip": info["strip"], "job_dir": job.job_dir, "prompt": record.prompt,
                             "mode": record.mode, "identities": list(record.identities)}
    except BaseException:
        editor.strips.remove(strip)
        raise
    src = input_settings.get_settings(context.scene)
    src.mask_source = 'MASK_STRIP'
    src.mask_strip = strip.name
    src.mask_preview = ""
    # The driving mask exported before is not this one: the next export (Generate does it) renders the strip.
    if sources.load_inputs(info["inputs"]).get("driving_mask"):
        sources.save_inputs(info["inputs"], driving_mask=None, driving_mask_mode=None)
    found = identity_names(record.identities) or "none"
    return with_warnings("{:s}: strip {:s} (muted) on channel {:d}, frames {:d}-{:d}, identities {:s}; "
                          "it is the mask strip of the Inputs now".format(name, strip.name, channel, first, end - 1,
                                                                          found),
                          [*info.get("warnings", ()), *record.warnings])


def _apply_reference_mask(job, context):
    info = job.meta["segment"]
    record = segmentation_jobs.load_record(job.job_dir, "masks")
    path = record.files[0]
    scene = context.scene
    src = input_settings.get_settings(scene)
    src.reference_mask_file = path
    inputs = sources.load_inputs(info["inputs"])
    reference = inputs.get("reference")
    if reference and os.path.normpath(reference.get("path", "")) == os.path.normpath(info["reference"]):
        still = ExportedStill.from_dict(reference)
        still.mask_path, still.identities = path, list(record.identities)
        still.note += "; Auto Mask of {:s}".format(record.prompt or "the subjects")
        inputs = sources.save_inputs(info["inputs"], reference=still, reference_mask_mode=record.mode or src.mode)
        inputs["mode"] = src.mode
        _ok, src.last_check = sources.check_identities(inputs)
    found = identity_names(record.identities) or "none"
    return with_warnings("Reference mask: identities {:s} ({:s})".format(found, path), record.warnings)
