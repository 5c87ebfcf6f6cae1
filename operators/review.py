# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the review loop: wedge, approve, use settings, notes, compare, flags, refresh, export review.

Thin: ``runtime.review``, ``runtime.layout``, ``runtime.compare``, ``runtime.wedge`` and
``runtime.review_export`` do the work; each operator that changes the scene is one undo step.
"""

__all__ = (
    "SCAIL2_OT_compare",
    "SCAIL2_OT_compare_end",
    "SCAIL2_OT_compare_toggle",
    "SCAIL2_OT_export_review",
    "SCAIL2_OT_take_add_note",
    "SCAIL2_OT_take_approve",
    "SCAIL2_OT_take_jump_flag",
    "SCAIL2_OT_take_refresh",
    "SCAIL2_OT_take_show_notes",
    "SCAIL2_OT_take_use_settings",
    "SCAIL2_OT_wedge",
    "TakeOperator",
    "classes",
)

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy.types import Operator

from .. import compat
from .. import preferences
from ..core import takes
from ..core.util import operator_error_line
from ..props import job_settings
from ..runtime import compare, follow, generation, layout, review, review_export, wedge
from ..runtime.session import GenerateError
from .common import HistoryOperator, history_item
from .jobs import queue_after_exports


def _seq_scene(context):
    return compat.sequencer_scene(context) or context.scene


class TakeOperator(HistoryOperator):
    """Mixin: the operator acts on one take (``index``, -1: the active one) through ``act(context, item)``.

    ``act`` returns None (done, nothing to say) or ``(level, message)``, or ``(level, message, False)`` when
    it did nothing; a GenerateError or RuntimeError it raises is reported as its one line.
    """

    def execute(self, context):
        item = history_item(context, self.index)
        if item is None:
            self.report({'ERROR'}, "No such take in the history")
            return {'CANCELLED'}
        try:
            outcome = self.act(context, item)
        except GenerateError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        except RuntimeError as ex:
            self.report({'ERROR'}, operator_error_line(ex))
            return {'CANCELLED'}
        if outcome is None:
            return {'FINISHED'}
        level, message, *done = outcome
        self.report({level}, message)
        return {'FINISHED'} if level != 'ERROR' and all(done) else {'CANCELLED'}


class SCAIL2_OT_wedge(Operator):
    """Queue several takes of this shot at once, varying what Vary says (each a normal job: cancel, resume)"""
    bl_idname = "scail2.wedge"
    bl_label = "Generate Wedge"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        return queue_after_exports(self, context, 'MISSING', lambda context: wedge.queue_wedge(context))


class SCAIL2_OT_take_approve(TakeOperator, Operator):
    """Keep this take: it replaces the shot's take in the layout, in place (strip and camera plane). """ \
        """The other takes stay in the history and on disk"""
    bl_idname = "scail2.take_approve"
    bl_label = "Approve"
    bl_options = {'REGISTER', 'UNDO'}

    def act(self, context, item):
        scene = context.scene
        replaced = layout.place_take(scene, _seq_scene(context), item)
        # One approved take per shot: the one approved before waits on hold.
        for other in job_settings.get_job_settings(scene).history:
            if other.shot == item.shot and other.take_status == 'APPROVED' and other.as_pointer() != item.as_pointer():
                other.take_status = 'ON_HOLD'
        item.take_status = 'APPROVED'
        item.status, item.note = 'IMPORTED', ""
        text = "Approved v{:03d}".format(item.version)
        if replaced is not None:
            text += ", in the place of v{:03d}".format(replaced.version)
        return 'INFO', text


class SCAIL2_OT_take_use_settings(TakeOperator, Operator):
    """Load this take's settings and seed into the Generate panel (seed locked), to tweak from there"""
    bl_idname = "scail2.take_use_settings"
    bl_label = "Use Settings"
    bl_options = {'REGISTER', 'UNDO'}

    def act(self, context, item):
        review.apply_settings(context.scene, item, *generation.history_entry_settings(item))
        return 'INFO', "Generate now uses the settings of v{:03d} (seed {:d})".format(item.version, item.seed)


class SCAIL2_OT_take_add_note(TakeOperator, Operator):
    """Put a note on the current frame of this take: a timeline marker, kept with the take (review.json)"""
    bl_idname = "scail2.take_add_note"
    bl_label = "Add Note"
    bl_options = {'REGISTER', 'UNDO'}

    text: StringProperty(name="Note", description="The note (empty: the panel's Note field)", options={'SKIP_SAVE'})

    def act(self, context, item):
        settings = job_settings.get_job_settings(context.scene)
        problem = review.add_note(context.scene, _seq_scene(context), item, self.text or settings.note_text)
        settings.note_text = ""
        return ('WARNING', problem) if problem else ('INFO', "Note added")


class SCAIL2_OT_take_show_notes(TakeOperator, Operator):
    """Show this take's notes as timeline markers (in place of the note markers shown now)"""
    bl_idname = "scail2.take_show_notes"
    bl_label = "Show Notes"
    bl_options = {'REGISTER', 'UNDO'}

    def act(self, context, item):
        review.show_notes(context.scene, _seq_scene(context), item)


class SCAIL2_OT_take_refresh(Operator):
    """Read every take's review.json again (another artist may have reviewed them)"""
    bl_idname = "scail2.take_refresh"
    bl_label = "Refresh Review"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        problems = review.refresh(context.scene)
        if problems:
            self.report({'WARNING'}, problems[0])
        return {'FINISHED'}


class SCAIL2_OT_take_jump_flag(TakeOperator, Operator):
    """Go to the take's next (or previous) flagged frame: where a score falls far below the take's own median"""
    bl_idname = "scail2.take_jump_flag"
    bl_label = "Next Flag"

    previous: BoolProperty(name="Previous", default=False, options={'SKIP_SAVE'})

    def act(self, context, item):
        scene = context.scene
        flags = compare.flag_scene_frames(_seq_scene(context), item)
        current = scene.frame_current
        target = takes.next_flag([frame for frame, _reason in flags], current, forward=not self.previous)
        if target is None:
            return 'INFO', "No flag {:s} frame {:d}".format("before" if self.previous else "after", current), False
        scene.frame_set(target)
        return 'INFO', "Frame {:d}: {:s}".format(target, dict(flags)[target])


class SCAIL2_OT_compare(TakeOperator, Operator):
    """Compare this take with another take, or with the driving footage, in the sequencer (A/B wipe or side by """ \
        """side; the same scene frames on both)"""
    bl_idname = "scail2.compare"
    bl_label = "Compare"
    bl_options = {'REGISTER', 'UNDO'}

    def act(self, context, item):
        settings = job_settings.get_job_settings(context.scene)
        against = settings.compare_with
        other = next((t for t in settings.history if t.job_id == against), None)
        if against != 'DRIVING' and other is None:
            raise GenerateError("No take {:s} in the history to compare with".format(against))
        compare.start(context.scene, _seq_scene(context), item, other, settings.compare_mode)


class _CompareStanding:
    @classmethod
    def poll(cls, context):
        if not compare.parts(_seq_scene(context)):
            cls.poll_message_set("No compare in the sequencer")
            return False
        return True


class SCAIL2_OT_compare_toggle(_CompareStanding, Operator):
    """Switch the compare between the A/B wipe and side by side"""
    bl_idname = "scail2.compare_toggle"
    bl_label = "Wipe / Side by Side"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        seq_scene = _seq_scene(context)
        mode = 'SIDE' if compare.mode_of(seq_scene) == 'WIPE' else 'WIPE'
        compare.set_mode(seq_scene, mode)
        job_settings.get_job_settings(context.scene).compare_mode = mode
        return {'FINISHED'}


class SCAIL2_OT_compare_end(_CompareStanding, Operator):
    """End the compare: its strips go, the result strips it muted play again"""
    bl_idname = "scail2.compare_end"
    bl_label = "End Compare"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        compare.end(_seq_scene(context))
        return {'FINISHED'}


class SCAIL2_OT_export_review(HistoryOperator, Operator):
    """Write the review page (HTML: contact sheets, scores, flags, notes, status, recipe) of this scene's takes"""
    bl_idname = "scail2.export_review"
    bl_label = "Export Review"
    bl_options = {'REGISTER'}

    filepath: StringProperty(name="File", subtype='FILE_PATH', options={'SKIP_SAVE'})
    shot_only: BoolProperty(name="This Shot Only", description="Only the takes of this take's shot",
                            default=True)
    open_page: EnumProperty(
        name="When Written",
        items=(('OPEN', "Open It", "Open the page in the web browser"), ('REPORT', "Report", "Say where it is")),
        default='REPORT', options={'SKIP_SAVE'},
    )

    def execute(self, context):
        settings = job_settings.get_job_settings(context.scene)
        active = history_item(context, self.index)
        items = [t for t in settings.history
                 if not self.shot_only or active is None or t.shot == active.shot]
        job_dirs = [t.job_dir for t in items if os.path.isdir(t.job_dir)]
        prefs = preferences.get_preferences(context)
        out = self.filepath or os.path.join(
            preferences.effective_output_dir(prefs), "review",
            "{:s}-{:s}.html".format(bpy.path.clean_name(context.scene.name), active.shot if active else "takes"))
        opening = self.open_page == 'OPEN'

        def ended(export):
            follow.notify('INFO' if export.returncode == 0 else 'ERROR', export.message)
            if opening and export.returncode == 0:
                bpy.ops.wm.url_open(url="file://" + export.out)

        try:
            review_export.start(prefs, bpy.path.abspath(out), job_dirs, on_end=ended)
        except GenerateError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        self.report({'INFO'}, "Writing the review of {:d} takes to {:s}".format(len(job_dirs), out))
        return {'FINISHED'}


classes = (
    SCAIL2_OT_wedge,
    SCAIL2_OT_take_approve,
    SCAIL2_OT_take_use_settings,
    SCAIL2_OT_take_add_note,
    SCAIL2_OT_take_show_notes,
    SCAIL2_OT_take_refresh,
    SCAIL2_OT_take_jump_flag,
    SCAIL2_OT_compare,
    SCAIL2_OT_compare_toggle,
    SCAIL2_OT_compare_end,
    SCAIL2_OT_export_review,
)
