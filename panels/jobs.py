# SPDX-License-Identifier: GPL-3.0-or-later
"""The job panels of the SCAIL sidebar tab: Generate, Queue and History (Inputs: ``panels/inputs.py``).

Each panel exists twice, in the Video Sequencer and in the 3D Viewport, and
both draw the same content with the ``draw_*`` functions below. The panels
work on the context's scene (where ``Scene.scail2_sources`` and
``Scene.scail2_job`` live); strips come from the sequencer's scene.
"""

__all__ = (
    "classes",
    "draw_generate",
    "draw_history",
    "draw_queue",
    "forget",
)

import os

import bpy
from bpy.types import Panel, UIList

from .. import preferences, protocol
from ..protocol.progress_text import progress_fields_text
from ..core import results, takes
from ..props import job_settings
from ..props.import_options import ImportOptions
from ..props.input_settings import get_settings
from ..runtime import input_render, session
from . import common
from .common import label_wrapped

QUEUE_ROWS = 8

# Whether a job folder has a finished matte: {job folder: (file times, bool)}.
_matte_cache = {}


def forget():
    """Drop what was read of the job folders (on unregister)."""
    _matte_cache.clear()


# --------------------------------------------------------------------------------------------
# Generate.

def _value_row(layout, text, value):
    """A read-only ``text: value`` row lined up with the property-split rows around it."""
    split = layout.split(factor=0.4)
    split.alignment = 'RIGHT'
    split.label(text=text)
    split.label(text=value)


def _reference_shape(src, scene):
    """(H, W) of the reference where the settings already tell it without reading a file, else None."""
    if src.reference_source == 'IMAGE' and src.reference_image is not None and all(src.reference_image.size):
        width, height = src.reference_image.size
        return height, width
    if src.reference_source == 'CAMERA':
        return scene.render.resolution_y, scene.render.resolution_x
    return None


def _output_size_lines(settings, src, scene):
    """The size the job's frames will have: the one place that shows what Resolution and Size decide. One or two
    short lines: the sidebar's value column cuts a long one in the middle."""
    if settings.width and settings.height:
        return ["{:d} x {:d}".format(settings.width, settings.height)]
    shape = _reference_shape(src, scene)
    if shape is None:
        short, long = protocol.RESOLUTIONS[settings.resolution]
        return ["{:d} x {:d} or {:d} x {:d}".format(long, short, short, long), "as the reference"]
    height, width = protocol.output_size(settings.resolution, None, None, shape)
    return ["{:d} x {:d}, as the reference".format(width, height)]


def _draw_sampling(layout, settings):
    """Steps, guidance and shift: the preset's values, shown as such, until the artist overrides them."""
    col = layout.column(align=True)
    col.prop(settings, "use_custom_sampling")
    if settings.use_custom_sampling:
        col.prop(settings, "steps")
        col.prop(settings, "guidance")
        col.prop(settings, "shift")
    else:
        values = job_settings.preset_sampling(settings)
        _value_row(col, "Steps", "Preset ({:d})".format(values["steps"]))
        _value_row(col, "Guidance", "Preset ({:.1f})".format(values["guidance"]))
        _value_row(col, "Shift", "Preset ({:.1f})".format(values["shift"]))
    col.prop(settings, "sampler")
    row = col.row(align=True)
    row.prop(settings, "seed")
    row.prop(settings, "use_seed_lock", text="", icon='LOCKED' if settings.use_seed_lock else 'UNLOCKED')


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
    col.prop(settings, "width", text="Size X")
    col.prop(settings, "height", text="Y")
    col = layout.column(align=True)
    for i, line in enumerate(_output_size_lines(settings, src, scene)):
        _value_row(col, "" if i else "Output", line)

    _draw_sampling(layout, settings)

    col = layout.column(heading="Frames")
    col.prop(settings, "use_frame_range", text="Limit")
    sub = col.column(align=True)
    sub.active = settings.use_frame_range
    sub.prop(settings, "frame_start")
    sub.prop(settings, "frame_end")

    col = layout.column()
    col.prop(settings, "use_matte")
    ImportOptions.draw_form(settings, col)
    ImportOptions.draw_plane_options(settings, col, context)

    job = common.latest_job(scene)
    rendering = input_render.active(scene)
    col = layout.column(align=True)
    row = col.row(align=True)
    row.scale_y = 1.5
    row.enabled = rendering is None
    row.operator("scail2.generate", icon='PLAY')
    if rendering is not None:
        # The job's first phase: its inputs rendered in Blender, a few frames per timer tick.
        row = col.row(align=True)
        row.progress(factor=rendering.factor(), type='BAR', text=rendering.text())
        row.operator("scail2.cancel_input_render", text="Cancel", icon='CANCEL')
    elif job is not None and job.active:
        props = row.operator("scail2.cancel_job", text="Cancel", icon='CANCEL')
        props.job = job.key
    col.operator("scail2.send_to_farm", icon='NETWORK_DRIVE')
    if job is not None and rendering is None:
        common.draw_job_state(layout, context, job)


# --------------------------------------------------------------------------------------------
# Queue.

def draw_queue(layout, context):
    """Every job of this session, newest first, with its state; cancel buttons for the unfinished ones."""
    queue = session.get_queue(create=False)
    if queue is not None and queue.signed_in_as():
        label_wrapped(layout, context, queue.signed_in_as(), 'USER')
    if queue is not None and queue.notice:
        label_wrapped(layout, context, queue.notice, 'INFO')
    if preferences.get_preferences(context).worker_location == 'REMOTE':
        draw_worker_jobs(layout, queue)
    jobs = list(queue.jobs.values())[::-1] if queue is not None else []
    if not jobs:
        layout.label(text="No jobs in this session")
        return
    col = layout.column(align=True)
    for job in jobs[:QUEUE_ROWS]:
        row = col.row(align=True)
        text = "{:s}: {:s}".format(job.meta.get("label") or job.key, job.phase_text())
        row.label(text=text[:120], icon=common.STATUS_ICONS.get(job.status, 'INFO'), translate=False)
        if job.active:
            props = row.operator("scail2.cancel_job", text="", icon='X')
            props.job = job.key
    if len(jobs) > QUEUE_ROWS:
        col.label(text="{:d} older jobs".format(len(jobs) - QUEUE_ROWS))
    layout.operator("scail2.stop_worker", icon='CANCEL')


def draw_worker_jobs(layout, queue):
    """A remote worker's queued and running jobs as this token sees them (an admin: every artist's), each
    with a cancel button; listed when the artist asks, then again whenever a job joins, starts or leaves."""
    box = layout.box()
    row = box.row()
    row.label(text="On the worker", icon='NETWORK_DRIVE')
    row.operator("scail2.list_worker_jobs", text="", icon='FILE_REFRESH')
    if queue is not None and queue.listing_worker_jobs and queue.worker_jobs_listed_at is None:
        box.label(text="Asking the worker\u2026")  # asked again later, the list shown stays until the answer
        return
    if queue is None or queue.worker_jobs_listed_at is None:
        box.label(text="List its jobs: yours from any session, everyone's for an admin")
        return
    if not queue.worker_jobs:
        box.label(text="No job queued or running")
    col = box.column(align=True)
    for entry in queue.worker_jobs[:QUEUE_ROWS]:
        row = col.row(align=True)
        row.label(text=worker_job_text(entry)[:120], icon=common.STATUS_ICONS.get(entry.get("status"), 'INFO'),
                  translate=False)
        props = row.operator("scail2.cancel_worker_job", text="", icon='X')
        props.job = entry.get("job", "")
    if len(queue.worker_jobs) > QUEUE_ROWS:
        col.label(text="{:d} more".format(len(queue.worker_jobs) - QUEUE_ROWS))


def worker_job_text(entry):
    """One row of the worker's list: "alice · queued, 2 ahead · take_01". Who and where in the queue come
    first: a sidebar cuts a row's end, and job folders are long ("SCAIL 20261207-101500-ab12cd")."""
    folder = os.path.basename(str(entry.get("job_dir", "")).rstrip("/\\")) or entry.get("job", "")
    ahead = entry.get("position") if entry.get("status") == "queued" else 0
    state = entry.get("status", "") + (", {:d} ahead".format(ahead) if ahead else "")
    if entry.get("status") == "running" and entry.get("progress"):
        state = progress_fields_text(entry["progress"])  # "Generating: segment 1/2, step 14/40"
    return " \u00b7 ".join(part for part in (entry.get("owner"), state, folder) if part)


# --------------------------------------------------------------------------------------------
# History.

class SCAIL2_UL_history(UIList):
    """This scene's takes: version, label (double-click to rename), status, rating and seed"""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        row = layout.row(align=True)
        status_icon = {key: icon for key, _name, _text, icon, _n in job_settings.TAKE_STATUS_ITEMS}
        version = "v{:03d}".format(item.version) if item.version else "v---"
        row.label(text=version, icon=status_icon[item.take_status], translate=False)
        row.prop(item, "label", text="", emboss=False)
        row.label(text=takes.take_badge("", item.rating, item.seed), translate=False)  # the icon shows the status

    def filter_items(self, context, data, propname):
        """Only the takes of the statuses the History's Show filter picks."""
        history = getattr(data, propname)
        shown = {job_settings.TAKE_STATUS[key] for key in data.history_filter}
        flags = [self.bitflag_filter_item if takes.matches_filter(job_settings.TAKE_STATUS[item.take_status], shown)
                 else 0 for item in history]
        return flags, []


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
    row = layout.row(align=True)
    row.prop(settings, "history_filter", expand=True)
    row.operator("scail2.take_refresh", text="", icon='FILE_REFRESH')
    layout.template_list("SCAIL2_UL_history", "", settings, "history", settings, "active_history_index", rows=3)
    index = settings.active_history_index
    if not 0 <= index < len(settings.history):
        return
    item = settings.history[index]
    box = layout.box()
    icon_id = common.thumbnail_icon(bpy.path.abspath(item.thumbnail))
    if icon_id:
        box.template_icon(icon_value=icon_id, scale=6.0)
    col = box.column(align=True)
    # Two short lines: at the sidebar's default width one line would lose the seed.
    col.label(text="Job " + item.job_id, translate=False)
    col.label(text="{:d} frames, seed {:d}".format(item.frames, item.seed), translate=False)
    if item.derived_from:
        col.label(text="Redone on a changed input from job " + item.derived_from, icon='INFO', translate=False)
    if item.note:
        label_wrapped(col, context, "Not imported: " + item.note, 'ERROR')
    if _has_matte(item.job_dir):
        col.label(text="Matte: RGBA frames (imports show the characters alone)", icon='CHECKMARK')
    row = box.row(align=True)
    row.operator("scail2.history_import", icon='IMPORT').index = index
    # On the active entry (the operator's index -1): the menu cannot set it.
    row.operator_menu_enum("scail2.history_import", "form", text="Import As")
    row = box.row(align=True)
    row.operator("scail2.history_redo", icon='FILE_REFRESH').index = index
    if item.frames:  # a matte cuts frames that exist: none yet on an entry the farm has not filled
        row.operator("scail2.matte_result", icon='SHADERFX').index = index
    matte = [job for job in session.scene_jobs(context.scene, ("matte",))
             if job.meta.get("segment", {}).get("job_dir") == item.job_dir]
    if matte and (matte[-1].active or matte[-1].status == "failed"):
        common.draw_job_state(box, context, matte[-1])
    row = box.row(align=True)
    props = row.operator("wm.path_open", text="Open Folder", icon='FILE_FOLDER')
    props.filepath = item.job_dir
    row.operator("scail2.history_remove", text="Remove", icon='TRASH').index = index


# --------------------------------------------------------------------------------------------
# The panels, once per editor.

class _Panel:
    bl_region_type = 'UI'
    bl_category = "SCAIL"


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
    SCAIL2_UL_history,
    SCAIL2_PT_sequencer_generate,
    SCAIL2_PT_view3d_generate,
    SCAIL2_PT_sequencer_queue,
    SCAIL2_PT_view3d_queue,
    SCAIL2_PT_sequencer_history,
    SCAIL2_PT_view3d_history,
)
