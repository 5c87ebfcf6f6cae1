# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators running SCAIL-2 jobs: generate, cancel, the history's import again and redo.

Thin: ``job_runtime`` builds the job, runs the queue and imports results.
Interactively Generate returns at once and a timer follows the job; in
background mode (``blender -b file.blend --python-expr "bpy.ops.scail2.generate()"``)
it runs the job to its end and imports it before returning.
"""

__all__ = (
    "SCAIL2_OT_cancel_job",
    "SCAIL2_OT_export_all_inputs",
    "SCAIL2_OT_generate",
    "SCAIL2_OT_history_import",
    "SCAIL2_OT_history_redo",
    "SCAIL2_OT_history_remove",
    "SCAIL2_OT_job_report",
    "SCAIL2_OT_stop_worker",
    "classes",
)

import bpy
from bpy.props import EnumProperty, IntProperty, StringProperty
from bpy.types import Operator

from .. import compat
from .. import job_runtime as runtime
from .. import job_settings
from .. import sources
from ..segment_runtime import MASKS_PROP
from . import backend_check
from . import import_result




def _missing_exports(scene, inputs, everything):
    """The export operators to run before a job, in order."""
    settings = sources.get_settings(scene)
    ops = []
    if everything or not inputs.get("driving"):
        ops.append(("driving footage", bpy.ops.scail2.export_driving))
    if settings.mask_source != 'NONE' and (everything or not inputs.get("driving_mask") or ops):
        ops.append(("masks", bpy.ops.scail2.export_masks))
    if everything or not inputs.get("reference"):
        ops.append(("reference", bpy.ops.scail2.export_reference))
    return ops


def _result_strip_driving(context):
    """``(editor, result strip, its driving strip)`` when the active strip is an imported result, else None.

    Importing a result makes its strip the active one; the footage it was made from is
    what the next job's driving export means. The same for an Auto Masks strip.
    """
    if sources.get_settings(context.scene).driving_source != 'STRIP':
        return None
    seq_scene = compat.sequencer_scene(context)
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    active = editor.active_strip if editor is not None else None
    key = next((k for k in (import_result.PROP_KEY, MASKS_PROP) if active is not None and k in active), None)
    if key is None:
        return None
    name = active[key].get("driving_strip" if key == import_result.PROP_KEY else "footage_strip", "")
    driving = editor.strips_all.get(name) if name else None
    return (editor, active, driving) if driving is not None else None


def export_inputs(operator, context, everything):
    """Run the exports a job still lacks (or all of them); False (reported) if one fails."""
    from .export_inputs import inputs_folder

    scene = context.scene
    try:
        inputs = sources.load_inputs(inputs_folder(context, scene))
    except sources.ExportError as ex:
        operator.report({'ERROR'}, str(ex))
        return False
    for what, op in _missing_exports(scene, inputs, everything):
        swap = _result_strip_driving(context) if what == "driving footage" else None
        if swap is not None:
            swap[0].active_strip = swap[2]
        try:
            op()
        except RuntimeError as ex:
            line = backend_check.operator_error_line(ex)
            operator.report({'ERROR'}, "Could not export the {:s}: {:s}".format(what, line))
            return False
        finally:
            if swap is not None:
                swap[0].active_strip = swap[1]
    return True


def _finish(operator, level, message):
    operator.report({level}, message)
    return {'CANCELLED'} if level == 'ERROR' else {'FINISHED'}


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
        if self.export != 'NONE' and not export_inputs(self, context, self.export == 'ALL'):
            return {'CANCELLED'}
        try:
            spec, meta = runtime.build_job(context)
            job, level, message = runtime.run_job(context, spec, meta)
        except runtime.GenerateError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        return _finish(self, level, message)


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
        queue = runtime.get_queue(create=False)
        if queue is None or not queue.busy:
            cls.poll_message_set("No SCAIL-2 job is running")
            return False
        return True

    def execute(self, context):
        queue = runtime.get_queue(create=False)
        job = queue.get(self.job) if self.job else (queue.running_job() or next(iter(queue.active_jobs()), None))
        if job is None or not queue.cancel(job.key):
            self.report({'WARNING'}, "That job has already ended")
            return {'CANCELLED'}
        self.report({'INFO'}, "Cancelling the SCAIL-2 job")
        if runtime.synchronous():
            queue.wait(job, timeout=60.0, on_change=lambda ch: runtime.apply_changes(ch, interactive=False))
        return {'FINISHED'}


def _history_item(context, index):
    settings = job_settings.get_job_settings(context.scene)
    index = settings.active_history_index if index < 0 else index
    if not 0 <= index < len(settings.history):
        return None
    return settings.history[index]


class _HistoryOperator:
    bl_options = {'REGISTER'}

    index: IntProperty(name="Index", default=-1, description="History entry (-1: the active one)",
                       options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        if context.scene is None or not len(job_settings.get_job_settings(context.scene).history):
            cls.poll_message_set("This scene has no SCAIL-2 jobs yet")
            return False
        return True


class SCAIL2_OT_history_import(_HistoryOperator, Operator):
    """Bring this job's result into the scene again, as it was brought back the first time"""
    bl_idname = "scail2.history_import"
    bl_label = "Import Again"
    bl_options = {'REGISTER', 'UNDO'}

    def execute(self, context):
        item = _history_item(context, self.index)
        if item is None:
            self.report({'ERROR'}, "No such history entry")
            return {'CANCELLED'}
        try:
            _spec, import_settings, _ui = runtime.history_entry_settings(item)
            runtime.import_job(context.scene, compat.sequencer_scene(context) or context.scene, item.manifest,
                               import_settings)
        except runtime.GenerateError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        except RuntimeError as ex:
            self.report({'ERROR'}, backend_check.operator_error_line(ex))
            return {'CANCELLED'}
        item.status = 'IMPORTED'
        item.note = ""
        self.report({'INFO'}, "Imported {:s} again".format(item.job_id))
        return {'FINISHED'}


class SCAIL2_OT_history_redo(_HistoryOperator, Operator):
    """Run this job again with exactly the same settings and seed (a new job, in a new folder)"""
    bl_idname = "scail2.history_redo"
    bl_label = "Redo"

    def execute(self, context):
        item = _history_item(context, self.index)
        if item is None:
            self.report({'ERROR'}, "No such history entry")
            return {'CANCELLED'}
        scene = context.scene
        try:
            spec, import_settings, ui = runtime.history_entry_settings(item)
            meta = runtime.job_meta(scene, compat.sequencer_scene(context) or scene, import_settings, ui,
                                    label=item.name)
            job, level, message = runtime.run_job(context, spec, meta)
        except runtime.GenerateError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        return _finish(self, level, message)


class SCAIL2_OT_history_remove(_HistoryOperator, Operator):
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
        queue = runtime.get_queue(create=False)
        return queue is not None and (queue.client is not None or queue.busy)

    def execute(self, context):
        runtime.shutdown()
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
    SCAIL2_OT_export_all_inputs,
    SCAIL2_OT_cancel_job,
    SCAIL2_OT_history_import,
    SCAIL2_OT_history_redo,
    SCAIL2_OT_history_remove,
    SCAIL2_OT_stop_worker,
    SCAIL2_OT_job_report,
)
