# SPDX-License-Identifier: GPL-3.0-or-later
"""The job panels of the SCAIL sidebar tab: Inputs, Generate, Queue and History.

Each panel exists twice, in the Video Sequencer and in the 3D Viewport, and
both draw the same content with the ``draw_*`` functions below. The panels
work on the context's scene (where ``Scene.scail2_sources`` and
``Scene.scail2_job`` live); strips come from the sequencer's scene.
"""

__all__ = (
    "classes",
    "draw_auto_masks",
    "draw_generate",
    "draw_history",
    "draw_inputs",
    "draw_queue",
    "forget_previews",
)

import os

import bpy
from bpy.types import Panel, UIList

from .. import compat
from .. import sources
from ..core import results
from ..core.inputs import INPUTS_NAME, PALETTE_NAMES
from ..props import job_settings
from ..props.input_settings import get_settings
from ..runtime import follow, session
from ..sources.exports import inputs_folder
from .common import label_wrapped

_STATUS_ICONS = {
    "submitting": 'SORTTIME',
    "queued": 'SORTTIME',
    "running": 'RENDER_ANIMATION',
    "done": 'CHECKMARK',
    "failed": 'ERROR',
    "cancelled": 'CANCEL',
}
QUEUE_ROWS = 8

# Thumbnails of the history (a preview collection, not Blender data).
_previews = None
# inputs.json as last read: {folder: (mtime, data)}; panels draw often, the file changes rarely.
_inputs_cache = {}
# Whether a job folder has a finished matte: {job folder: (file times, bool)}.
_matte_cache = {}


def forget_previews():
    """Free the thumbnails (on unregister)."""
    global _previews
    if _previews is not None:
        import bpy.utils.previews

        bpy.utils.previews.remove(_previews)
        _previews = None
    _inputs_cache.clear()
    _matte_cache.clear()


def _thumbnail_icon(path):
    global _previews
    if not path or not os.path.isfile(path):
        return 0
    if _previews is None:
        import bpy.utils.previews

        _previews = bpy.utils.previews.new()
    key = "{:s}:{:f}".format(path, os.path.getmtime(path))  # a re-rendered file gets a new preview
    item = _previews.get(key)
    if item is None:
        item = _previews.load(key, path, 'IMAGE')
    return item.icon_id


def _recorded_inputs(context, scene):
    """What the scene's inputs folder holds (inputs.json), or None when it cannot be read."""

    folder = inputs_folder(context, scene)
    path = os.path.join(folder, INPUTS_NAME)
    try:
        mtime = os.path.getmtime(path)
    except OSError:
        return {}
    cached = _inputs_cache.get(folder)
    if cached is not None and cached[0] == mtime:
        return cached[1]
    try:
        data = sources.load_inputs(folder)
    except sources.ExportError:
        data = None
    _inputs_cache[folder] = (mtime, data)
    return data


# --------------------------------------------------------------------------------------------
# Inputs.

class SCAIL2_UL_identities(UIList):
    """The objects and collections that are characters 1-6 of the colour masks"""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        row.label(text="{:d} {:s}".format(item.identity, PALETTE_NAMES[item.identity - 1]), translate=False)
        block = item.object if item.target == 'OBJECT' else item.collection
        row.label(text=block.name if block is not None else "(nothing)",
                  icon='OBJECT_DATA' if item.target == 'OBJECT' else 'OUTLINER_COLLECTION', translate=False)


def _recorded_line(layout, context, label, entry, missing):
    if entry:
        note = entry.get("note") or entry.get("source") or entry.get("path", "")
        label_wrapped(layout, context, "{:s}: {:s}".format(label, note), 'CHECKMARK')
    else:
        label_wrapped(layout, context, "{:s}: {:s}".format(label, missing), 'DOT')


def draw_inputs(layout, context):
    """Where the job's driving footage, masks and reference come from, and what has been exported."""
    scene = context.scene
    src = get_settings(scene)
    layout.use_property_split = True
    layout.use_property_decorate = False

    col = layout.column()
    col.prop(src, "driving_source")
    if src.driving_source == 'CAMERA':
        col.prop(src, "driving_camera")
        col.prop(src, "engine")
    elif src.driving_source == 'STRIP':
        seq_scene = compat.sequencer_scene(context)
        editor = seq_scene.sequence_editor if seq_scene is not None else None
        strip = editor.active_strip if editor is not None else None
        col.label(text=strip.name if strip is not None else "No active strip",
                  icon='SEQUENCE' if strip is not None else 'ERROR', translate=False)

    col = layout.column()
    col.prop(src, "mask_source")
    if src.mask_source == 'MASK_STRIP':
        seq_scene = compat.sequencer_scene(context)
        if seq_scene is not None and seq_scene.sequence_editor is not None:
            col.prop_search(src, "mask_strip", seq_scene.sequence_editor, "strips_all")
        else:
            col.prop(src, "mask_strip")
        col.operator("scail2.preview_mask", icon='IMAGE_RGB')
        preview = _thumbnail_icon(bpy.path.abspath(src.mask_preview))
        if preview:
            col.template_icon(icon_value=preview, scale=6.0)
    elif src.mask_source == 'FILE':
        col.prop(src, "mask_file")
    elif src.mask_source == 'IDENTITIES':
        row = col.row()
        row.template_list("SCAIL2_UL_identities", "", src, "identities", src, "active_identity_index", rows=3)
        side = row.column(align=True)
        props = side.operator("scail2.assign_identity", text="", icon='ADD')
        props.identity = min(6, len(src.identities) + 1)
        side.operator("scail2.remove_identity", text="", icon='REMOVE')
        row = col.row(align=True)
        row.operator("scail2.preview_mask", icon='IMAGE_RGB')
        row.operator("scail2.check_identities", icon='CHECKMARK')
        preview = _thumbnail_icon(bpy.path.abspath(src.mask_preview))
        if preview:
            col.template_icon(icon_value=preview, scale=6.0)

    if src.driving_source == 'STRIP':
        draw_auto_masks(layout, context, src)

    col = layout.column()
    col.prop(src, "reference_source")
    if src.reference_source == 'FILE':
        col.prop(src, "reference_file")
    elif src.reference_source == 'IMAGE':
        col.prop(src, "reference_image")
    elif src.reference_source == 'CAMERA':
        col.prop(src, "reference_camera")
        col.prop(src, "reference_engine")
        col.prop(src, "reference_mask")
    if src.reference_source != 'CAMERA':
        row = col.row(align=True)
        row.prop(src, "reference_mask_file")
        row.operator("scail2.auto_reference_mask", text="", icon='SHADERFX')
        job = _latest_job(scene, ("masks",), kind="reference_mask")
        if job is not None and (job.active or job.status == "failed"):
            draw_job_state(col, context, job)

    col = layout.column()
    col.prop(src, "max_size")
    col.prop(src, "inputs_dir")

    col = layout.column(align=True)
    row = col.row(align=True)
    row.operator("scail2.export_driving", text="Driving", icon='EXPORT')
    row.operator("scail2.export_masks", text="Masks", icon='EXPORT')
    row.operator("scail2.export_reference", text="Reference", icon='EXPORT')
    col.operator("scail2.export_all_inputs", icon='FILE_REFRESH')

    inputs = _recorded_inputs(context, scene)
    box = layout.box()
    if inputs is None:
        box.label(text="The inputs record cannot be read: export again", icon='ERROR')
        return
    _recorded_line(box, context, "Driving", inputs.get("driving"), "not exported yet")
    if src.mask_source != 'NONE' or inputs.get("driving_mask"):
        _recorded_line(box, context, "Mask", inputs.get("driving_mask"), "not exported yet")
    _recorded_line(box, context, "Reference", inputs.get("reference"), "not exported yet")
    if src.last_check:
        label_wrapped(box, context, src.last_check, 'INFO')


def draw_auto_masks(layout, context, src):
    """Auto Masks of the footage strip: what to look for, how many, the buttons (Refine Masks with a mask strip)
    and the latest such job."""
    box = layout.box()
    col = box.column()
    col.prop(src, "auto_mask_prompt")
    col.prop(src, "auto_mask_identities")
    job = _latest_job(context.scene, ("masks",), kind="driving_masks")
    row = col.row(align=True)
    row.operator("scail2.auto_masks", icon='SHADERFX')
    if src.mask_source == 'MASK_STRIP':
        row.operator("scail2.refine_masks", icon='MOD_MASK')
    if job is not None and job.active:
        row.operator("scail2.cancel_job", text="", icon='CANCEL').job = job.key
    if job is not None:
        draw_job_state(col, context, job)


# --------------------------------------------------------------------------------------------
# Generate.

def _latest_job(scene, tasks=("generate",), kind=None):
    """The scene's running job of ``tasks`` (of that segmentation ``kind``), else the newest one."""
    jobs = [job for job in session.scene_jobs(scene, tasks)
            if kind is None or job.meta.get("segment", {}).get("kind") == kind]
    active = [job for job in jobs if job.active]
    return active[-1] if active else (jobs[-1] if jobs else None)


def draw_job_state(layout, context, job):
    """Progress, ETA, preview and error of one job."""
    col = layout.column(align=True)
    icon = _STATUS_ICONS.get(job.status, 'INFO')
    if job.status == "failed" and job.error is not None:
        label_wrapped(col, context, job.error.message, 'ERROR')
        if job.error.hint:
            label_wrapped(col, context, job.error.hint, 'INFO')
        return
    label_wrapped(col, context, job.phase_text(), icon)
    if job.active:
        text = "About {:s} left".format(job.eta_text()) if job.eta_s is not None else "Working out the time left"
        col.progress(factor=job.progress(), type='BAR', text=text)
    if job.noise_only:
        col.label(text="Test model: the frames are noise", icon='INFO')
    image = bpy.data.images.get(follow.PREVIEW_IMAGE)
    if job.preview and image is not None and image.preview is not None and image.preview.icon_id:
        layout.template_icon(icon_value=image.preview.icon_id, scale=8.0)


def draw_generate(layout, context):
    """The job's settings, Generate and Cancel, and the scene's latest job."""
    scene = context.scene
    settings = job_settings.get_job_settings(scene)
    src = get_settings(scene)
    layout.use_property_split = True
    layout.use_property_decorate = False

    col = layout.column()
    col.prop(src, "mode")
    col.prop(settings, "prompt", text="Prompt")
    col.prop(settings, "negative_prompt", text="Avoid")
    col.prop(settings, "preset")
    col.prop(settings, "resolution")

    col = layout.column(align=True)
    col.prop(settings, "steps")
    col.prop(settings, "guidance")
    row = col.row(align=True)
    row.prop(settings, "seed")
    row.prop(settings, "use_seed_lock", text="", icon='LOCKED' if settings.use_seed_lock else 'UNLOCKED')

    col = layout.column(align=True)
    col.prop(settings, "width", text="Size X")
    col.prop(settings, "height", text="Y")

    col = layout.column(heading="Frames")
    col.prop(settings, "use_frame_range", text="Limit")
    sub = col.column(align=True)
    sub.active = settings.use_frame_range
    sub.prop(settings, "frame_start")
    sub.prop(settings, "frame_end")

    col = layout.column()
    col.prop(settings, "use_matte")
    col.prop(settings, "form")
    if settings.form != 'STRIP':
        col.prop(settings, "camera")
        col.prop(settings, "distance")

    job = _latest_job(scene)
    col = layout.column(align=True)
    row = col.row(align=True)
    row.scale_y = 1.5
    row.operator("scail2.generate", icon='PLAY')
    if job is not None and job.active:
        props = row.operator("scail2.cancel_job", text="Cancel", icon='CANCEL')
        props.job = job.key
    if job is not None:
        draw_job_state(layout, context, job)


# --------------------------------------------------------------------------------------------
# Queue.

def draw_queue(layout, context):
    """Every job of this session, newest first, with its state; cancel buttons for the unfinished ones."""
    queue = session.get_queue(create=False)
    if queue is not None and queue.notice:
        label_wrapped(layout, context, queue.notice, 'INFO')
    jobs = list(queue.jobs.values())[::-1] if queue is not None else []
    if not jobs:
        layout.label(text="No jobs in this session")
        return
    col = layout.column(align=True)
    for job in jobs[:QUEUE_ROWS]:
        row = col.row(align=True)
        text = "{:s}: {:s}".format(job.meta.get("label") or job.key, job.phase_text())
        row.label(text=text[:120], icon=_STATUS_ICONS.get(job.status, 'INFO'), translate=False)
        if job.active:
            props = row.operator("scail2.cancel_job", text="", icon='X')
            props.job = job.key
    if len(jobs) > QUEUE_ROWS:
        col.label(text="{:d} older jobs".format(len(jobs) - QUEUE_ROWS))
    layout.operator("scail2.stop_worker", icon='CANCEL')


# --------------------------------------------------------------------------------------------
# History.

class SCAIL2_UL_history(UIList):
    """This scene's finished SCAIL-2 jobs"""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        icon = 'CHECKMARK' if item.status == 'IMPORTED' else 'INFO'
        row.label(text=item.name or item.job_id, icon=icon, translate=False)
        row.label(text=item.created, translate=False)


def _has_matte(job_dir):
    """Whether the job folder holds a finished matte (cached on the folder's files' times)."""
    stamps = []
    for path in (os.path.join(job_dir, results.MANIFEST_NAME),
                 os.path.join(job_dir, results.MATTE_FOLDER, results.SEGMENT_RECORD)):
        try:
            stamps.append(os.path.getmtime(path))
        except OSError:
            stamps.append(None)
    cached = _matte_cache.get(job_dir)
    if cached is None or cached[0] != stamps:
        cached = _matte_cache[job_dir] = (stamps, bool(results.matte_frames_dir(job_dir)))
    return cached[1]


def draw_history(layout, context):
    """The scene's finished jobs; the active one's thumbnail, seed and buttons."""
    settings = job_settings.get_job_settings(context.scene)
    if not len(settings.history):
        layout.label(text="No finished jobs in this scene yet")
        return
    layout.template_list("SCAIL2_UL_history", "", settings, "history", settings, "active_history_index", rows=3)
    index = settings.active_history_index
    if not 0 <= index < len(settings.history):
        return
    item = settings.history[index]
    box = layout.box()
    icon_id = _thumbnail_icon(bpy.path.abspath(item.thumbnail))
    if icon_id:
        box.template_icon(icon_value=icon_id, scale=6.0)
    col = box.column(align=True)
    col.label(text="Job {:s}: {:d} frames, seed {:d}".format(item.job_id, item.frames, item.seed), translate=False)
    if item.note:
        label_wrapped(col, context, "Not imported: " + item.note, 'ERROR')
    if _has_matte(item.job_dir):
        col.label(text="Matte: RGBA frames (imports show the characters alone)", icon='CHECKMARK')
    row = box.row(align=True)
    row.operator("scail2.history_import", icon='IMPORT').index = index
    row.operator("scail2.history_redo", icon='FILE_REFRESH').index = index
    row.operator("scail2.matte_result", icon='SHADERFX').index = index
    matte = [job for job in session.scene_jobs(context.scene, ("matte",))
             if job.meta.get("segment", {}).get("job_dir") == item.job_dir]
    if matte and (matte[-1].active or matte[-1].status == "failed"):
        draw_job_state(box, context, matte[-1])
    row = box.row(align=True)
    props = row.operator("wm.path_open", text="Open Folder", icon='FILE_FOLDER')
    props.filepath = item.job_dir
    row.operator("scail2.history_remove", text="Remove", icon='TRASH').index = index


# --------------------------------------------------------------------------------------------
# The panels, once per editor.

class _Panel:
    bl_region_type = 'UI'
    bl_category = "SCAIL"


class _InputsPanel(_Panel):
    bl_label = "Inputs"

    def draw(self, context):
        draw_inputs(self.layout, context)


class _GeneratePanel(_Panel):
    bl_label = "Generate"

    def draw(self, context):
        draw_generate(self.layout, context)


class _QueuePanel(_Panel):
    bl_label = "Queue"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        draw_queue(self.layout, context)


class _HistoryPanel(_Panel):
    bl_label = "History"

    def draw(self, context):
        draw_history(self.layout, context)


class SCAIL2_PT_sequencer_inputs(_InputsPanel, Panel):
    bl_space_type = 'SEQUENCE_EDITOR'


class SCAIL2_PT_view3d_inputs(_InputsPanel, Panel):
    bl_space_type = 'VIEW_3D'


class SCAIL2_PT_sequencer_generate(_GeneratePanel, Panel):
    bl_space_type = 'SEQUENCE_EDITOR'


class SCAIL2_PT_view3d_generate(_GeneratePanel, Panel):
    bl_space_type = 'VIEW_3D'


class SCAIL2_PT_sequencer_queue(_QueuePanel, Panel):
    bl_space_type = 'SEQUENCE_EDITOR'


class SCAIL2_PT_view3d_queue(_QueuePanel, Panel):
    bl_space_type = 'VIEW_3D'


class SCAIL2_PT_sequencer_history(_HistoryPanel, Panel):
    bl_space_type = 'SEQUENCE_EDITOR'


class SCAIL2_PT_view3d_history(_HistoryPanel, Panel):
    bl_space_type = 'VIEW_3D'


classes = (
    SCAIL2_UL_identities,
    SCAIL2_UL_history,
    SCAIL2_PT_sequencer_inputs,
    SCAIL2_PT_view3d_inputs,
    SCAIL2_PT_sequencer_generate,
    SCAIL2_PT_view3d_generate,
    SCAIL2_PT_sequencer_queue,
    SCAIL2_PT_view3d_queue,
    SCAIL2_PT_sequencer_history,
    SCAIL2_PT_view3d_history,
)
