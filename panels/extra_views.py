# SPDX-License-Identifier: GPL-3.0-or-later
"""Extra Views, a sub-panel of Inputs: more views of the character, and the turnaround from its 3D model."""

__all__ = (
    "classes",
)

import json
import math
import os

from bpy.types import Panel, UIList

from ..core.extra_views import EXTRA_VIEWS, MAX_EXTRA_VIEWS
from ..props.extra_views import get_extra_views
from ..sources.extra_views import views_fingerprint
from .common import label_wrapped
from .inputs import SCAIL2_PT_sequencer_inputs, SCAIL2_PT_view3d_inputs, _recorded_inputs


def view_title(view):
    """What the list shows of a view: where it comes from, in a few words."""
    if view.source == 'FILE':
        return os.path.basename(view.file) or "(no file chosen)"
    if view.source == 'IMAGE':
        return view.image.name if view.image is not None else "(no image chosen)"
    if view.source == 'STRIP':
        return "{:s} at frame {:d}".format(view.strip or "(no strip)", view.frame)
    if view.source == 'CAMERA':
        return "{:s} at frame {:d}".format(view.camera.name if view.camera else "(no camera)", view.frame)
    return "{:s} at {:d}\u00b0".format(view.target.name if view.target else "(no character)",
                                       int(round(math.degrees(view.angle))))


_ICONS = {'FILE': 'FILE_IMAGE', 'IMAGE': 'IMAGE_DATA', 'STRIP': 'SEQUENCE', 'CAMERA': 'CAMERA_DATA',
          'TURNAROUND': 'ORIENTATION_GIMBAL'}


class SCAIL2_UL_extra_views(UIList):
    """Extra views of the character, in the order the job gets them"""

    def draw_item(self, context, layout, data, item, icon, active_data, active_property, index=0, flt_flag=0):
        layout.label(text="{:d}  {:s}".format(index + 1, view_title(item)), icon=_ICONS[item.source],
                     translate=False)


def _draw_view(layout, view):
    col = layout.column()
    col.prop(view, "source")
    if view.source == 'FILE':
        col.prop(view, "file")
    elif view.source == 'IMAGE':
        col.prop(view, "image")
    elif view.source == 'STRIP':
        col.prop(view, "strip")
    elif view.source == 'CAMERA':
        col.prop(view, "camera")
    else:
        col.prop(view, "target")
        col.prop(view, "angle")
    if view.source in {'STRIP', 'CAMERA', 'TURNAROUND'}:
        col.prop(view, "frame")
    if view.source in {'CAMERA', 'TURNAROUND'}:
        col.prop(view, "engine")
        col.label(text="Mask: the assigned identities, rendered", icon='MOD_MASK')
        return
    col.prop(view, "mask_source")
    if view.mask_source == 'FILE':
        col.prop(view, "mask_file")
    else:
        col.prop(view, "identity")


def draw_extra_views(layout, context):
    """The list, the active view's settings, the turnaround and what was exported."""
    scene = context.scene
    extra = get_extra_views(scene)
    label_wrapped(layout, context, "More views of the character (back, side...), up to {:d}".format(MAX_EXTRA_VIEWS),
                  'INFO')
    row = layout.row()
    row.template_list("SCAIL2_UL_extra_views", "", extra, "views", extra, "active_index", rows=3)
    col = row.column(align=True)
    col.operator("scail2.add_extra_view", text="", icon='ADD')
    col.operator("scail2.remove_extra_view", text="", icon='REMOVE')
    col.separator()
    col.operator("scail2.add_extra_view_files", text="", icon='FILEBROWSER')
    col.separator()
    col.operator("scail2.move_extra_view", text="", icon='TRIA_UP').direction = 'UP'
    col.operator("scail2.move_extra_view", text="", icon='TRIA_DOWN').direction = 'DOWN'
    if 0 <= extra.active_index < len(extra.views):
        _draw_view(layout.box(), extra.views[extra.active_index])

    box = layout.box()
    box.label(text="Turnaround", icon='ORIENTATION_GIMBAL')
    col = box.column()
    col.prop(extra, "turnaround_object")
    col.prop(extra, "turnaround_angles")
    col.prop(extra, "turnaround_engine")
    col.operator("scail2.render_turnaround", icon='RENDER_STILL')

    layout.operator("scail2.export_extra_views", icon='EXPORT')
    inputs = _recorded_inputs(context, scene)
    if not inputs or not (extra.views or inputs.get(EXTRA_VIEWS)):
        return
    recorded = inputs.get(EXTRA_VIEWS) or []
    made_from = (inputs.get("made_from") or {}).get(EXTRA_VIEWS)
    if made_from != json.loads(json.dumps(views_fingerprint(context))):
        label_wrapped(layout, context, "Views changed since they were exported: Generate exports them again",
                      'FILE_REFRESH')
    elif recorded:
        label_wrapped(layout, context, "{:d} view{:s} exported with their masks".format(
            len(recorded), "" if len(recorded) == 1 else "s"), 'CHECKMARK')


class _ExtraViewsPanel:
    bl_region_type = 'UI'
    bl_category = "SCAIL"
    bl_label = "Extra Views"

    def draw(self, context):
        draw_extra_views(self.layout, context)


class SCAIL2_PT_sequencer_extra_views(_ExtraViewsPanel, Panel):
    bl_space_type = 'SEQUENCE_EDITOR'
    bl_parent_id = SCAIL2_PT_sequencer_inputs.__name__


class SCAIL2_PT_view3d_extra_views(_ExtraViewsPanel, Panel):
    bl_space_type = 'VIEW_3D'
    bl_parent_id = SCAIL2_PT_view3d_inputs.__name__


classes = (
    SCAIL2_UL_extra_views,
    SCAIL2_PT_sequencer_extra_views,
    SCAIL2_PT_view3d_extra_views,
)
