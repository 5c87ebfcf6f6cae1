# SPDX-License-Identifier: GPL-3.0-or-later
"""What the job operators share: starting a job and reporting it, and the history entry an operator acts on."""

__all__ = (
    "HistoryOperator",
    "history_item",
    "start_job",
)

from bpy.props import IntProperty

from ..props import job_settings
from ..runtime.session import GenerateError


def start_job(operator, start, refusals=(GenerateError,)):
    """Run ``start()`` (``runtime.follow.run_job`` or ``resume_job``: ``(job, level, message)``) and report it;
    one of ``refusals`` is reported as the one line it is. The operator's return value."""
    try:
        _job, level, message = start()
    except refusals as ex:
        operator.report({'ERROR'}, str(ex))
        return {'CANCELLED'}
    operator.report({level}, message)
    return {'CANCELLED'} if level == 'ERROR' else {'FINISHED'}


def history_item(context, index):
    settings = job_settings.get_job_settings(context.scene)
    index = settings.active_history_index if index < 0 else index
    if not 0 <= index < len(settings.history):
        return None
    return settings.history[index]


class HistoryOperator:
    """Mixin: ``index`` names a history entry of the scene (-1: the active one); poll wants a history."""

    bl_options = {'REGISTER'}

    index: IntProperty(name="Index", default=-1, description="History entry (-1: the active one)",
                       options={'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        if context.scene is None or not len(job_settings.get_job_settings(context.scene).history):
            cls.poll_message_set("This scene has no SCAIL-2 jobs yet")
            return False
        return True
