# SPDX-License-Identifier: GPL-3.0-or-later
"""The Inputs panel of the SCAIL sidebar tab: driving footage, masks, reference, and the file each job will use.

The panel exists twice, in the Video Sequencer and in the 3D Viewport, and both
draw :func:`draw_inputs`. It works on the context's scene (where
``Scene.scail2_sources`` lives); strips come from the sequencer's scene.
"""

__all__ = (
    "classes",
    "draw_auto_masks",
    "draw_input_checks",
    "draw_inputs",
    "forget",
)

import os

import bpy
from bpy.types import Panel, UIList

from .. import compat
from .. import sources
from ..core.input_checks import checklist_rows
from ..core.inputs import INPUTS_NAME, PALETTE_NAMES
from ..props.input_settings import get_settings
from ..runtime import input_checks as input_checks_runtime
from ..sources import exports
from ..sources.exports import inputs_folder
from . import common
from .common import label_wrapped

# inputs.json as last read: {folder: (mtime, data)}; panels draw often, the file changes rarely.
_inputs_cache = {}


def forget():
    """Drop what was read of the inputs folders (on unregister)."""
    _inputs_cache.clear()


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


def _recorded_line(layout, context, label, entry, stale):
    """What a job will use for one input: its file and how it was made, or that Generate exports it first."""
    if not entry:
        label_wrapped(layout, context, "{:s}: not exported yet (Generate exports it)".format(label), 'DOT')
        return
    path = os.path.basename(os.path.normpath(entry.get("path", "")))
    if stale:
        label_wrapped(layout, context, "{:s}: its source changed since {:s} was exported; Generate exports it "
                                       "again".format(label, path or "it"), 'FILE_REFRESH')
        return
    note = entry.get("note") or entry.get("source") or ""
    # A neutral icon: that a file was written says nothing of whether it makes a good take (the checks do).
    label_wrapped(layout, context, "{:s}: {:s}{:s}".format(label, path, " \u2013 " + note if note else ""),
                  'FILE')


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
        active = editor.active_strip if editor is not None else None
        # An imported result or an Auto Masks strip stands for its footage, which is what Generate exports.
        strip = exports.footage_behind(editor, active) if active is not None else None
        if strip is None:
            col.label(text="No active strip", icon='ERROR')
        elif strip != active:
            # The active strip is a result or masks made from it: name the footage, which is what is exported.
            col.label(text="{:s} (footage of the active strip)".format(strip.name), icon='SEQUENCE',
                      translate=False)
        else:
            col.label(text=strip.name, icon='SEQUENCE', translate=False)

    col = layout.column()
    col.prop(src, "mask_source")
    if src.mask_source == 'MASK_STRIP':
        seq_scene = compat.sequencer_scene(context)
        if seq_scene is not None and seq_scene.sequence_editor is not None:
            col.prop_search(src, "mask_strip", seq_scene.sequence_editor, "strips_all")
        else:
            col.prop(src, "mask_strip")
        col.operator("scail2.preview_mask", icon='IMAGE_RGB')
        preview = common.thumbnail_icon(bpy.path.abspath(src.mask_preview))
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
        preview = common.thumbnail_icon(bpy.path.abspath(src.mask_preview))
        if preview:
            col.template_icon(icon_value=preview, scale=6.0)

    if src.driving_source == 'STRIP':
        draw_auto_masks(layout, context, src)

    col = layout.column()
    col.prop(src, "reference_source")
    # "Image" and "Mask" beside "Reference": the full property names are cut at the sidebar's default width.
    if src.reference_source == 'FILE':
        col.prop(src, "reference_file", text="Image")
    elif src.reference_source == 'IMAGE':
        col.prop(src, "reference_image", text="Image")
    elif src.reference_source == 'CAMERA':
        col.prop(src, "reference_camera")
        col.prop(src, "reference_engine")
        col.prop(src, "reference_mask")
    if src.reference_source != 'CAMERA':
        row = col.row(align=True)
        row.prop(src, "reference_mask_file")
        row.operator("scail2.auto_reference_mask", text="", icon='SHADERFX')
        job = common.latest_job(scene, ("masks",), kind="reference_mask")
        if job is not None and (job.active or job.status == "failed"):
            common.draw_job_state(col, context, job)

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
    stale = exports.stale_exports(context, inputs)
    _recorded_line(box, context, "Driving", inputs.get("driving"), "driving" in stale)
    if src.mask_source != 'NONE' or inputs.get("driving_mask"):
        _recorded_line(box, context, "Mask", inputs.get("driving_mask"), "driving_mask" in stale)
    _recorded_line(box, context, "Reference", inputs.get("reference"), "reference" in stale)
    if src.mask_source == 'NONE' and not inputs.get("driving_mask"):
        label_wrapped(box, context, "No mask: the whole frame is character 1", 'INFO')
    draw_input_checks(layout, context, src)


def draw_input_checks(layout, context, src):
    """Check Inputs, the clear-markers button and the latest checklist: verdict icon, number, one line."""
    box = layout.box()
    row = box.row(align=True)
    row.operator("scail2.check_inputs", icon='VIEWZOOM')
    row.operator("scail2.clear_check_markers", text="", icon='MARKER_HLT')
    if src.input_checks_state:
        label_wrapped(box, context, src.input_checks_state, 'SORTTIME')
    report = input_checks_runtime.stored_report(context.scene)
    if report is None:
        if not src.input_checks_state:
            label_wrapped(box, context, "Not checked yet: Check Inputs (Generate checks them too)", 'DOT')
        return
    for icon, text in checklist_rows(report):
        label_wrapped(box, context, text, icon)


def draw_auto_masks(layout, context, src):
    """Auto Masks of the footage strip: what to look for, how many, the buttons (Refine Masks with a mask strip)
    and the latest such job."""
    box = layout.box()
    col = box.column()
    col.prop(src, "auto_mask_prompt")
    col.prop(src, "auto_mask_identities")
    job = common.latest_job(context.scene, ("masks",), kind="driving_masks")
    row = col.row(align=True)
    row.operator("scail2.auto_masks", icon='SHADERFX')
    if src.mask_source == 'MASK_STRIP':
        row.operator("scail2.refine_masks", icon='MOD_MASK')
    if job is not None and job.active:
        row.operator("scail2.cancel_job", text="", icon='CANCEL').job = job.key
    if job is not None:
        common.draw_job_state(col, context, job)


# --------------------------------------------------------------------------------------------
# The panel, once per editor.

class _InputsPanel:
    bl_region_type = 'UI'
    bl_category = "SCAIL"
    bl_label = "Inputs"

    def draw(self, context):
        draw_inputs(self.layout, context)


class SCAIL2_PT_sequencer_inputs(_InputsPanel, Panel):
    bl_space_type = 'SEQUENCE_EDITOR'


class SCAIL2_PT_view3d_inputs(_InputsPanel, Panel):
    bl_space_type = 'VIEW_3D'


classes = (
    SCAIL2_UL_identities,
    SCAIL2_PT_sequencer_inputs,
    SCAIL2_PT_view3d_inputs,
)
