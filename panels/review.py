# SPDX-License-Identifier: GPL-3.0-or-later
"""The Review and Wedge panels of the SCAIL sidebar tab: the active take's verdict, scores, notes, compare.

Drawn in the Video Sequencer and the 3D Viewport alike (the take is the History's active entry).
"""

__all__ = (
    "classes",
    "draw_review",
    "draw_wedge",
)

from bpy.types import Panel

from .. import compat
from ..props import job_settings
from ..runtime import compare, review, review_export
from .common import label_wrapped

SCORE_NAMES = {"motion": "Motion", "temporal": "Stability", "identity": "Identity", "background": "Background",
               "faces": "Faces"}


def _active_take(settings):
    index = settings.active_history_index
    return settings.history[index] if 0 <= index < len(settings.history) else None


def _draw_scores(layout, context, item, index):
    scores, problem = review.take_scores(item.manifest)
    box = layout.box()
    if problem:
        label_wrapped(box, context, problem, 'ERROR')
        return
    if scores is None:
        box.label(text="No scores yet (python -m backend score JOB_DIR measures them)", icon='INFO')
        return
    col = box.column(align=True)
    for score in scores.scores:
        value = "n/a" if score.value is None else "{:.2f}".format(score.value)
        col.label(text="{:s}: {:s}".format(SCORE_NAMES.get(score.name, score.name.title()), value),
                  icon='CHECKMARK' if score.value is not None and score.value >= 0.5 else 'ERROR', translate=False)
    flags = compare.flag_scene_frames(compat.sequencer_scene(context) or context.scene, item)
    row = box.row(align=True)
    row.label(text="{:d} flagged frames".format(len(flags)), icon='ERROR' if flags else 'CHECKMARK')
    props = row.operator("scail2.take_jump_flag", text="", icon='TRIA_LEFT')
    props.index, props.previous = index, True
    row.operator("scail2.take_jump_flag", text="", icon='TRIA_RIGHT').index = index


def _draw_notes(layout, settings, item, index):
    box = layout.box()
    col = box.column(align=True)
    for note in item.notes:
        col.label(text="Frame {:d}: {:s}".format(note.frame, note.text), icon='MARKER', translate=False)
    row = box.row(align=True)
    row.prop(settings, "note_text", text="")
    row.operator("scail2.take_add_note", text="", icon='ADD').index = index
    row.operator("scail2.take_show_notes", text="", icon='HIDE_OFF').index = index


def _draw_compare(layout, context, settings, index):
    box = layout.box()
    seq_scene = compat.sequencer_scene(context) or context.scene
    mode = compare.mode_of(seq_scene)
    if mode is None:
        box.prop(settings, "compare_with", text="With")
        box.prop(settings, "compare_mode", text="As")
        box.operator("scail2.compare", icon='SEQ_SPLITVIEW').index = index
        return
    box.label(text="Comparing: {:s}".format("A/B wipe" if mode == 'WIPE' else "side by side"), icon='SEQ_SPLITVIEW')
    row = box.row(align=True)
    row.operator("scail2.compare_toggle", icon='ARROW_LEFTRIGHT')
    row.operator("scail2.compare_end", icon='X')


def draw_review(layout, context):
    """The active take: label, status, rating, scores and flags, notes, compare, approve, use settings, report."""
    settings = job_settings.get_job_settings(context.scene)
    item = _active_take(settings)
    if item is None:
        layout.label(text="Choose a take in the History")
        return
    index = settings.active_history_index
    layout.label(text="v{:03d} of shot {:s}".format(item.version, item.shot or "?"), icon='SEQUENCE',
                 translate=False)
    layout.prop(item, "label")
    layout.row().prop(item, "take_status", expand=True)
    layout.prop(item, "rating")
    _draw_scores(layout, context, item, index)
    _draw_notes(layout, settings, item, index)
    _draw_compare(layout, context, settings, index)
    row = layout.row(align=True)
    row.scale_y = 1.3
    row.operator("scail2.take_approve", icon='CHECKMARK').index = index
    row.operator("scail2.take_use_settings", icon='PRESET').index = index
    props = layout.operator("scail2.history_redo", text="Redo on New Input", icon='FILE_REFRESH')
    props.index, props.on_new_input = index, True
    export = review_export.current()
    layout.operator("scail2.export_review", icon='WORLD').index = index
    if export is not None:
        text = "Writing the review page..." if export.running else export.message
        label_wrapped(layout, context, text, 'TIME' if export.running else 'INFO')


def draw_wedge(layout, context):
    settings = job_settings.get_job_settings(context.scene)
    layout.use_property_split = True
    layout.use_property_decorate = False
    layout.prop(settings, "wedge_kind")
    if settings.wedge_kind == 'SEED':
        layout.prop(settings, "wedge_count")
        layout.label(text="Seeds from {:d} on".format(settings.seed))
    else:
        layout.prop(settings, "wedge_values")
    layout.operator("scail2.wedge", icon='RENDER_ANIMATION')


class _Panel:
    bl_region_type = 'UI'
    bl_category = "SCAIL"


class _ReviewPanel(_Panel):
    bl_label = "Review"

    def draw(self, context):
        draw_review(self.layout, context)


class _WedgePanel(_Panel):
    bl_label = "Wedge"
    bl_options = {'DEFAULT_CLOSED'}

    def draw(self, context):
        draw_wedge(self.layout, context)


class SCAIL2_PT_sequencer_review(_ReviewPanel, Panel):
    bl_space_type = 'SEQUENCE_EDITOR'


class SCAIL2_PT_view3d_review(_ReviewPanel, Panel):
    bl_space_type = 'VIEW_3D'


class SCAIL2_PT_sequencer_wedge(_WedgePanel, Panel):
    bl_space_type = 'SEQUENCE_EDITOR'


class SCAIL2_PT_view3d_wedge(_WedgePanel, Panel):
    bl_space_type = 'VIEW_3D'


classes = (
    SCAIL2_PT_sequencer_wedge,
    SCAIL2_PT_view3d_wedge,
    SCAIL2_PT_sequencer_review,
    SCAIL2_PT_view3d_review,
)
