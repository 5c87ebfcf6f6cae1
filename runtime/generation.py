# SPDX-License-Identifier: GPL-3.0-or-later
"""Generations inside Blender: a job built from the scene's settings and exported inputs, and its finish.

:func:`build_job` turns the Generate panel and the inputs folder into a
``protocol.JobSpec`` plus the meta data the finish needs (scenes, import
settings, the artist's choices); ``runtime.follow.run_job`` queues it. When it
is done ``runtime.take_finish`` adds a history entry (:func:`add_history_entry`) to its
scene and imports the result there (strip, plane or both) in one undo step. A failed or
cancelled job changes nothing in the scene.
"""

__all__ = (
    "add_history_entry",
    "build_job",
    "record_cancelled",
    "history_entry_settings",
    "import_job",
)

import json
import os
import time

import bpy

from .. import compat
from .. import protocol
from .. import sources
from ..core.extra_views import view_identity_problem
from ..core.util import one_line, operator_error_line
from ..props import input_settings, job_settings
from ..sources.exports import inputs_folder
from .session import GenerateError, JobRequest, job_meta, job_scenes, scene_overrides


# --------------------------------------------------------------------------------------------
# Building a job from the scene.

def _frame_range(settings, clip):
    """``(frame_start, frame_end)`` of the job in the exported footage's own frames."""
    if not settings.use_frame_range:
        return clip.frame_start, clip.frame_end
    first, last = settings.frame_start, settings.frame_end
    if last < first:
        raise GenerateError("The frame range {:d}-{:d} is empty".format(first, last))
    inside = [f for f in range(max(first, clip.scene_frame_start), min(last, clip.scene_frame_end - 1) + 1)]
    if not inside:
        raise GenerateError("Frames {:d}-{:d} are outside the exported driving footage (scene frames {:d}-{:d})".format(
            first, last, clip.scene_frame_start, clip.scene_frame_end - 1))
    start = clip.exported_at(inside[0])
    end = clip.exported_at(inside[-1])
    return clip.frame_start + start, clip.frame_start + end + 1


def _scene_frame_of(clip, index):
    """The scene frame showing exported frame ``index`` (in the footage's own frames)."""
    offset = index - clip.frame_start
    if 0 <= offset < len(clip.scene_frames):
        return int(clip.scene_frames[offset])
    return int(clip.scene_frame_start)


def ui_settings(settings, sources_settings):
    """The artist's choices, for the history (plain data)."""
    return {
        "mode": sources_settings.mode,
        "prompt": settings.prompt,
        "negative_prompt": settings.negative_prompt,
        "preset": settings.preset,
        "resolution": settings.resolution,
        "width": settings.width,
        "height": settings.height,
        "sampling": ({"steps": settings.steps, "guidance": settings.guidance, "shift": settings.shift}
                     if settings.use_custom_sampling else "preset"),
        "sampler": job_settings.SAMPLERS[settings.sampler],
        "seed_locked": settings.use_seed_lock,
        "matte": settings.use_matte,
        "frame_range": [settings.frame_start, settings.frame_end] if settings.use_frame_range else None,
    }


def _recorded_inputs(context, scene, mode):
    """The inputs folder's record, checked: driving and reference exported, masks made for ``mode``."""
    try:
        inputs = sources.load_inputs(inputs_folder(context, scene))
    except sources.ExportError as ex:
        raise GenerateError(str(ex)) from None
    if not inputs.get("driving"):
        raise GenerateError("Export the driving footage first (SCAIL tab, Inputs)")
    if not inputs.get("reference"):
        raise GenerateError("Export the reference image first (SCAIL tab, Inputs)")
    for key, what in (("driving_mask_mode", "driving mask"), ("reference_mask_mode", "reference mask")):
        made_for = inputs.get(key)
        if made_for and made_for != mode:
            raise GenerateError("The {:s} was exported for {:s} mode; export it again for {:s} mode".format(
                what, made_for, mode))
    return inputs


def _check_size(settings):
    if bool(settings.width) != bool(settings.height):
        raise GenerateError("Set both the width and the height, or neither")
    if settings.width % 32 or settings.height % 32:
        raise GenerateError("Width and height must be multiples of 32, got {:d}x{:d}".format(
            settings.width, settings.height))


def _job_spec(fields, settings, src):
    """The checked ``protocol.JobSpec`` of the input ``fields`` and the panel's settings (a new seed unless locked)."""
    seed = settings.seed if settings.use_seed_lock else protocol.pick_seed()
    try:
        return protocol.JobSpec(
            **fields,
            prompt=settings.prompt,
            negative_prompt=settings.negative_prompt,
            preset=settings.preset,
            resolution=settings.resolution,
            height=settings.height,
            width=settings.width,
            steps=settings.steps if settings.use_custom_sampling else None,
            guidance=settings.guidance if settings.use_custom_sampling else None,
            shift=settings.shift if settings.use_custom_sampling else None,
            sampler=job_settings.SAMPLERS[settings.sampler],
            seed=seed,
            matte=settings.use_matte,
            matte_prompt=src.auto_mask_prompt.strip() or protocol.DEFAULT_SEGMENT_PROMPT,
        ).validate()
    except (protocol.ProtocolError, TypeError) as ex:
        raise GenerateError(str(ex)) from None


def _import_settings(scene, seq_scene, settings, clip, spec):
    """How the finished job comes back: the form, the strip it lines up with, the first frame, the camera."""
    editor = seq_scene.sequence_editor
    driving_strip = clip.strip if clip.strip and editor is not None and clip.strip in editor.strips else ""
    camera = settings.camera or scene.camera
    return dict(
        settings.import_settings(),
        driving_strip=driving_strip,
        frame_start=_scene_frame_of(clip, spec.frame_start),
        camera=camera.name if camera is not None else "",
    )


def check_settings(scene):
    """The Generate panel's own settings checked before any input is rendered; GenerateError if they are wrong."""
    _check_size(job_settings.get_job_settings(scene))


def build_job(context, scene=None):
    """A generation of ``scene``'s settings and exported inputs as a ``JobRequest``; GenerateError if incomplete."""
    scene = scene or context.scene
    settings = job_settings.get_job_settings(scene)
    src = input_settings.get_settings(scene)

    # 1. Read the exported inputs, checked for this mode (and the extra views against the driving mask).
    inputs = _recorded_inputs(context, scene, src.mode)
    problem = view_identity_problem(inputs)
    if problem:
        raise GenerateError(problem)

    # 2. Their fields of the spec, with the frame limit in the footage's own frames.
    fields = sources.job_fields(inputs)
    fields["mode"] = src.mode
    clip = sources.ExportedClip.from_dict(inputs["driving"])
    fields["frame_start"], fields["frame_end"] = _frame_range(settings, clip)

    # 3. The panel's settings, checked.
    _check_size(settings)
    spec = _job_spec(fields, settings, src)

    # 4. What the finish needs: the scenes, how to import, the artist's choices for the history.
    seq_scene = compat.sequencer_scene(context) or scene
    meta = job_meta(scene, seq_scene, _import_settings(scene, seq_scene, settings, clip, spec),
                    ui_settings(settings, src),
                    label=settings.prompt.strip() or clip.source or os.path.basename(clip.path))
    return JobRequest(spec, meta)


def history_entry_settings(item):
    """``(spec dict, import settings, ui settings)`` stored in a history entry; GenerateError if unreadable."""
    try:
        data = json.loads(item.settings_json)
        return dict(data["spec"]), dict(data["import"]), dict(data.get("ui") or {})
    except (ValueError, KeyError, TypeError):
        raise GenerateError("The history entry {:s} has no readable settings".format(item.name)) from None


# --------------------------------------------------------------------------------------------
# Finishing: history and import.

def import_job(scene, seq_scene, manifest, import_settings, undo=False):
    """Run ``scail2.import_result`` for ``manifest`` in ``scene``; raises RuntimeError with its message."""
    overrides = scene_overrides(scene, seq_scene)
    camera = import_settings.get("camera") or ""
    if camera and bpy.data.objects.get(camera) is None:
        camera = ""
    with bpy.context.temp_override(**overrides):
        return bpy.ops.scail2.import_result(
            'EXEC_DEFAULT', undo,
            filepath=manifest,
            form=import_settings.get("form", 'STRIP'),
            driving_strip=import_settings.get("driving_strip", ""),
            frame_start=int(import_settings.get("frame_start", scene.frame_current)),
            camera=camera,
            distance=float(import_settings.get("distance", 10.0)),
            # Entries from before the plane's look was a scene setting keep the operator's defaults.
            **{key: import_settings[key] for key in ("fill_mode", "shading", "use_alpha") if key in import_settings},
        )


def add_history_entry(job, scene):
    """The scene's history entry of a generation that ended (done or cancelled), made the active one: what
    Redo and Import Again use; the job's folder name as its id."""
    meta = job.meta
    job_id = os.path.basename(os.path.normpath(job.job_dir)) or job.id
    settings = job_settings.get_job_settings(scene)
    item = settings.history.add()
    item.name = one_line(meta.get("label") or job_id, 60)
    item.job_id = job_id
    item.job_dir = job.job_dir
    item.manifest = job.manifest or os.path.join(job.job_dir, protocol.MANIFEST_NAME)
    item.seed = int(job.spec.get("seed", 0)) if int(job.spec.get("seed", -1)) >= 0 else 0
    item.frames = job.frames_ready or (job.frames if job.status == "done" else 0)
    item.thumbnail = job.first_frame or _first_frame(item.manifest)
    item.created = time.strftime("%Y-%m-%d %H:%M")
    item.settings_json = json.dumps(
        {"spec": job.spec, "import": meta.get("import", {}), "ui": meta.get("ui", {})}, sort_keys=True)
    settings.active_history_index = len(settings.history) - 1
    return item


def record_cancelled(job):
    """A generation cancelled once its frames were being written (decoding, or frames kept) gets its history
    entry, not imported, even when it kept no frame: the sampling it paid for stays at hand for Redo, with its
    seed. One cancelled while sampling leaves the scene as it was, history included."""
    scene, _seq_scene = job_scenes(job.meta)
    if scene is None or job.task != "generate" or not job.job_dir:
        return None
    if not job.frames_ready and job.phase not in ("decode", "matte"):
        return None
    item = add_history_entry(job, scene)
    item.status = 'DONE'
    item.note = ("cancelled; its {:d} frames are kept in the job folder".format(item.frames) if item.frames
                 else "cancelled while its frames were being written; none was kept")
    return item


def fill_entry_from_manifest(item):
    """Give a history entry made before its frames existed (a farm job's) their count and first frame."""
    try:
        frames = protocol.load_manifest(item.manifest)["frames"]
    except (OSError, ValueError, KeyError, TypeError):
        return
    if not item.frames:
        item.frames = len(frames)
    if not item.thumbnail:
        item.thumbnail = _first_frame(item.manifest)


def _first_frame(manifest):
    try:
        data = protocol.load_manifest(manifest)
        return os.path.join(os.path.dirname(manifest), data["frames"][0]["file"])
    except (OSError, ValueError, KeyError, IndexError, TypeError):
        return ""
