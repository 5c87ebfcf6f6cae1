# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators running SCAIL-2 jobs: generate, cancel, the history's import again and redo.

Thin: ``runtime.generation`` builds the job and imports its result, ``runtime.follow`` runs the queue.
Interactively Generate returns at once and a timer follows the job; in
background mode (``blender -b file.blend --python-expr "bpy.ops.scail2.generate()"``)
it runs the job to its end and imports it before returning.
"""

__all__ = (
    "SCAIL2_OT_cancel_input_render",
    "SCAIL2_OT_cancel_job",
    "SCAIL2_OT_cancel_worker_job",
    "SCAIL2_OT_check_inputs",
    "SCAIL2_OT_clear_check_markers",
    "SCAIL2_OT_export_all_inputs",
    "SCAIL2_OT_generate",
    "SCAIL2_OT_generate_anyway",
    "SCAIL2_OT_history_import",
    "SCAIL2_OT_history_redo",
    "SCAIL2_OT_history_remove",
    "SCAIL2_OT_job_report",
    "SCAIL2_OT_list_worker_jobs",
    "SCAIL2_OT_resume_job",
    "SCAIL2_OT_stop_worker",
    "classes",
    "queue_after_exports",
)

import os

import bpy
from bpy.props import BoolProperty, EnumProperty, StringProperty
from bpy.types import Operator

from .. import compat, preferences
from .. import sources
from ..core.util import operator_error_line
from ..props import job_settings
from ..props.import_options import FORM_ITEMS
from ..runtime import farm, follow, generation, input_checks, input_render, review, session
from ..sources import exports
from .common import HistoryOperator, history_item, start_job


def export_inputs(operator, context, everything):
    """Export what a job still lacks (or all of it); False (reported) if an export fails."""
    try:
        exports.export_missing(context, everything)
    except sources.ExportError as ex:
        operator.report({'ERROR'}, str(ex))
        return False
    return True


class SCAIL2_OT_generate(Operator):
    """Animate the reference with SCAIL-2 from the driving footage. Runs in the background; the result is """ \
        """imported when it is done"""
    bl_idname = "scail2.generate"
    bl_label = "Generate"
    bl_options = {'REGISTER'}

    export: EnumProperty(
        name="Export Inputs",
        items=(
            ('MISSING', "Missing", "Export the inputs not exported yet, as set up in the Inputs panel"),
            ('ALL', "All", "Export every input again first"),
            ('NONE', "None", "Use the exported inputs as they are"),
        ),
        default='MISSING',
    )

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        # The worker checks the inputs first; a failed check asks once (Generate Anyway).
        return queue_after_exports(self, context, self.export, follow.generate_checked)


def queue_after_exports(operator, context, export, queue_job):
    """Export what the job needs (``export``: MISSING, ALL or NONE), then ``queue_job(context)``.

    Interactively the inputs are rendered from a timer first (the job's first phase, with Cancel);
    in background mode they are exported before the job is queued. The operator's return value.
    """
    try:
        keys = [] if export == 'NONE' else exports.exports_needed(context, export == 'ALL')
    except sources.ExportError as ex:
        operator.report({'ERROR'}, str(ex))
        return {'CANCELLED'}
    if keys and not session.synchronous():
        def render_then_queue():
            generation.check_settings(context.scene)
            return input_render.start(context, keys, then=queue_job)

        return start_job(operator, render_then_queue)
    if keys and not export_inputs(operator, context, export == 'ALL'):
        return {'CANCELLED'}
    return start_job(operator, lambda: queue_job(context))


class SCAIL2_OT_check_inputs(Operator):
    """Check the footage, masks and reference before any GPU time: cuts, camera motion, blur, subjects, """ \
        """framing, length. Runs in the worker; the checklist shows in the Inputs panel, frames become markers"""
    bl_idname = "scail2.check_inputs"
    bl_label = "Check Inputs"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        try:
            keys = exports.exports_needed(context, False)
        except sources.ExportError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        if keys and not session.synchronous():
            return start_job(self, lambda: input_render.start(context, keys, then=follow.check_inputs))
        if keys and not export_inputs(self, context, False):
            return {'CANCELLED'}
        return start_job(self, lambda: follow.check_inputs(context))


class SCAIL2_OT_clear_check_markers(Operator):
    """Remove the timeline markers the input checks placed (named "check: ...")"""
    bl_idname = "scail2.clear_check_markers"
    bl_label = "Clear Check Markers"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        scenes = [s for s in dict.fromkeys((context.scene, compat.sequencer_scene(context))) if s is not None]
        removed = input_checks.clear_markers(scenes)
        self.report({'INFO'}, "Removed {:d} check markers".format(removed))
        return {'FINISHED'}


class SCAIL2_OT_generate_anyway(Operator):
    """Queue the job the input checks stopped, as it is; the failed checks stay with the take"""
    bl_idname = "scail2.generate_anyway"
    bl_label = "Generate Anyway"
    bl_options = {'REGISTER', 'INTERNAL'}

    scene: StringProperty(name="Scene", description="The scene whose held job to queue", options={'SKIP_SAVE'})

    def invoke(self, context, event):
        scene = bpy.data.scenes.get(self.scene) or context.scene
        held = input_checks.peek_held(scene)
        if held is None:
            return {'CANCELLED'}
        return context.window_manager.invoke_confirm(
            self, event, title="The input checks failed", message=held[1], confirm_text="Generate Anyway",
            icon='WARNING')

    def execute(self, context):
        scene = bpy.data.scenes.get(self.scene) or context.scene
        held = input_checks.held_job(scene)
        if held is None:
            self.report({'ERROR'}, "No job is waiting for Generate Anyway")
            return {'CANCELLED'}
        job, summary = held
        job.meta.setdefault("ui", {})["input_checks"] = "fail, generated anyway: " + summary
        return start_job(self, lambda: follow.run_job(context, *job))


class SCAIL2_OT_cancel_input_render(Operator):
    """Stop rendering the inputs for the job; nothing is queued"""
    bl_idname = "scail2.cancel_input_render"
    bl_label = "Cancel"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        return input_render.active() is not None

    def execute(self, context):
        level, message = input_render.cancel()
        self.report({level}, message)
        return {'FINISHED'}


class SCAIL2_OT_resume_job(Operator):
    """Continue a generation whose worker stopped, in its own folder: the segments already made are kept"""
    bl_idname = "scail2.resume_job"
    bl_label = "Resume"
    bl_options = {'REGISTER'}

    job: StringProperty(name="Job", description="The job to resume (its key in this session's queue)",
                        options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        queue = session.get_queue(create=False)
        if queue is None or not any(job.resumable for job in queue.jobs.values()):
            cls.poll_message_set("No stopped SCAIL-2 job to resume")
            return False
        return True

    def execute(self, context):
        queue = session.get_queue(create=False)
        job = queue.get(self.job) if self.job else None
        if job is None or not job.resumable:
            self.report({'ERROR'}, "That job cannot be resumed (only a generation whose worker stopped or "
                                   "whose folder could not be written can)")
            return {'CANCELLED'}
        return start_job(self, lambda: follow.resume_job(context, job))


class SCAIL2_OT_export_all_inputs(Operator):
    """Export the driving footage, the masks and the reference again, as set up in the Inputs panel"""
    bl_idname = "scail2.export_all_inputs"
    bl_label = "Export All"
    bl_options = {'REGISTER'}

    def execute(self, context):
        if not export_inputs(self, context, everything=True):
            return {'CANCELLED'}
        self.report({'INFO'}, "Inputs exported")
        return {'FINISHED'}


class SCAIL2_OT_cancel_job(Operator):
    """Stop a SCAIL-2 job; the scene is left as it is and the frames made so far stay on disk"""
    bl_idname = "scail2.cancel_job"
    bl_label = "Cancel Job"
    bl_options = {'REGISTER'}

    job: StringProperty(
        name="Job",
        description="The job to cancel (empty: the running job, else the next queued one)",
        options={'SKIP_SAVE'},
    )

    @classmethod
    def poll(cls, context):
        queue = session.get_queue(create=False)
        if queue is None or not queue.busy:
            cls.poll_message_set("No SCAIL-2 job is running")
            return False
        return True

    def execute(self, context):
        queue = session.get_queue(create=False)
        job = queue.get(self.job) if self.job else (queue.running_job() or next(iter(queue.active_jobs()), None))
        if job is None or not queue.cancel(job.key):
            self.report({'WARNING'}, "That job has already ended")
            return {'CANCELLED'}
        self.report({'INFO'}, "Cancelling the SCAIL-2 job")
        if session.synchronous():
            queue.wait(job, timeout=60.0, on_change=lambda ch: follow.apply_changes(ch, interactive=False))
        return {'FINISHED'}


class SCAIL2_OT_list_worker_jobs(Operator):
    """Ask the remote worker which jobs it has queued or running: yours from any session, every artist's for an admin"""
    bl_idname = "scail2.list_worker_jobs"
    bl_label = "List the Worker's Jobs"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        if preferences.get_preferences(context).worker_location != 'REMOTE':
            cls.poll_message_set("Only a remote worker is shared between sessions and artists")
            return False
        return True

    def execute(self, context):
        try:
            queue = session.get_queue(context)
        except session.GenerateError as ex:  # the preferences lack the address or token
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        queue.list_worker_jobs()
        follow.follow_queue()
        return {'FINISHED'}


class SCAIL2_OT_cancel_worker_job(Operator):
    """Cancel this job on the remote worker (an admin may cancel any artist's); its frames so far stay there"""
    bl_idname = "scail2.cancel_worker_job"
    bl_label = "Cancel Job on the Worker"
    bl_options = {'REGISTER'}

    job: StringProperty(name="Job", description="The worker's id of the job", options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        queue = session.get_queue(create=False)
        return queue is not None and bool(queue.worker_jobs)

    def execute(self, context):
        queue = session.get_queue(create=False)
        if not queue.cancel_worker_job(self.job):
            self.report({'WARNING'}, "That job is no longer on the worker's list")
            return {'CANCELLED'}
        follow.follow_queue()
        return {'FINISHED'}


class SCAIL2_OT_history_import(HistoryOperator, Operator):
    """Bring this job's result into the scene again, as it was brought back the first time or in another form"""
    bl_idname = "scail2.history_import"
    bl_label = "Import Again"
    bl_options = {'REGISTER', 'UNDO'}

    form: EnumProperty(
        name="Import As",
        items=(('RECORDED', "As Before", "The form it was brought back in the first time"), *FORM_ITEMS),
        default='RECORDED',
        options={'SKIP_SAVE'},
    )

    def execute(self, context):
        item = history_item(context, self.index)
        if item is None:
            self.report({'ERROR'}, "No such history entry")
            return {'CANCELLED'}
        if not item.frames and not os.path.isfile(item.manifest):
            # A farm job still running, or a job cancelled before it kept a frame: say which, not "no manifest".
            self.report({'ERROR'}, farm.unfinished_line(item) or (
                "Job {:s} kept no frames: nothing to import (Redo runs it again)".format(item.job_id)))
            return {'CANCELLED'}
        try:
            _spec, import_settings, _ui = generation.history_entry_settings(item)
            if self.form != 'RECORDED':
                import_settings["form"] = self.form
            generation.import_job(context.scene, compat.sequencer_scene(context) or context.scene, item.manifest,
                               import_settings)
        except session.GenerateError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        except RuntimeError as ex:
            self.report({'ERROR'}, operator_error_line(ex))
            return {'CANCELLED'}
        item.status = 'IMPORTED'
        item.note = ""
        generation.fill_entry_from_manifest(item)
        if not item.version:  # a farm job's entry, made before its manifest existed: numbered now
            review.register_take(context.scene, item)
        self.report({'INFO'}, "Imported {:s} again".format(item.job_id))
        return {'FINISHED'}


class SCAIL2_OT_history_redo(HistoryOperator, Operator):
    """Run this take again with exactly the same settings and seed (a new job, in a new folder); refused """ \
        """when an input file changed since"""
    bl_idname = "scail2.history_redo"
    bl_label = "Redo"

    on_new_input: BoolProperty(
        name="On New Input",
        description="Run it although an input changed since: a new take that says which take it came from",
        default=False, options={'SKIP_SAVE'},
    )

    def execute(self, context):
        item = history_item(context, self.index)
        if item is None:
            self.report({'ERROR'}, "No such history entry")
            return {'CANCELLED'}
        refusal = review.redo_refusal(item)
        if refusal and not self.on_new_input:
            self.report({'ERROR'}, refusal)
            return {'CANCELLED'}

        def redo():
            scene = context.scene
            spec, import_settings, ui = generation.history_entry_settings(item)
            meta = session.job_meta(scene, compat.sequencer_scene(context) or scene, import_settings, ui,
                                    label=item.name)
            if refusal:
                meta["derived_from"] = item.job_id
            return follow.run_job(context, spec, meta)

        return start_job(self, redo)


class SCAIL2_OT_history_remove(HistoryOperator, Operator):
    """Remove this entry from the history (its files stay on disk)"""
    bl_idname = "scail2.history_remove"
    bl_label = "Remove From History"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        settings = job_settings.get_job_settings(context.scene)
        index = settings.active_history_index if self.index < 0 else self.index
        if not 0 <= index < len(settings.history):
            self.report({'ERROR'}, "No such history entry")
            return {'CANCELLED'}
        settings.history.remove(index)
        settings.active_history_index = max(0, min(index, len(settings.history) - 1))
        return {'FINISHED'}


class SCAIL2_OT_stop_worker(Operator):
    """Stop the SCAIL-2 worker, freeing its memory (running and queued jobs are cancelled)"""
    bl_idname = "scail2.stop_worker"
    bl_label = "Stop Worker"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        queue = session.get_queue(create=False)
        return queue is not None and (queue.client is not None or queue.busy)

    def execute(self, context):
        follow.shutdown()
        self.report({'INFO'}, "SCAIL-2 worker stopped")
        return {'FINISHED'}


class SCAIL2_OT_job_report(Operator):
    """Show a message about a SCAIL-2 job in the status bar and the Info editor"""
    bl_idname = "scail2.job_report"
    bl_label = "SCAIL-2 Job Message"
    bl_options = {'INTERNAL'}

    level: EnumProperty(
        items=(('INFO', "Info", ""), ('WARNING', "Warning", ""), ('ERROR', "Error", "")),
        default='INFO',
    )
    message: StringProperty()

    def execute(self, context):
        self.report({self.level}, self.message)
        return {'FINISHED'}


classes = (
    SCAIL2_OT_generate,
    SCAIL2_OT_generate_anyway,
    SCAIL2_OT_check_inputs,
    SCAIL2_OT_clear_check_markers,
    SCAIL2_OT_export_all_inputs,
    SCAIL2_OT_cancel_job,
    SCAIL2_OT_list_worker_jobs,
    SCAIL2_OT_cancel_worker_job,
    SCAIL2_OT_cancel_input_render,
    SCAIL2_OT_resume_job,
    SCAIL2_OT_history_import,
    SCAIL2_OT_history_redo,
    SCAIL2_OT_history_remove,
    SCAIL2_OT_stop_worker,
    SCAIL2_OT_job_report,
)
