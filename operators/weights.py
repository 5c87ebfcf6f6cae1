# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of Get Weights: show the plan, get the weights, cancel.

Thin: ``runtime.weights`` runs the backend's ``download`` command in the background and applies
its result (the Weights field, Memory Mode, Check Weights).
"""

__all__ = (
    "SCAIL2_OT_cancel_get_weights",
    "SCAIL2_OT_get_weights",
    "SCAIL2_OT_show_weights_plan",
    "classes",
)

from bpy.types import Operator

from .. import preferences
from ..runtime import weights


def _start(operator, context, start):
    """Run ``start(preferences)``; its one-line refusal becomes the operator's error report."""
    try:
        message = start(preferences.get_preferences(context))
    except weights.WeightsError as ex:
        operator.report({'ERROR'}, str(ex))
        return {'CANCELLED'}
    if message:
        operator.report({'INFO'}, message)
    return {'FINISHED'}


def _needs_python(cls, context):
    if not preferences.get_preferences(context).python_path.strip():
        cls.poll_message_set("Set up the backend first (Set Up Backend, or choose the backend Python)")
        return False
    return True


class SCAIL2_OT_show_weights_plan(Operator):
    """Show which weights files suit this computer's GPU, their sizes and the free disk space (nothing is """ \
        """downloaded)"""
    bl_idname = "scail2.show_weights_plan"
    bl_label = "Show Plan"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        if weights.plan_running():
            cls.poll_message_set("The plan is being made")
            return False
        return _needs_python(cls, context)

    def execute(self, context):
        return _start(self, context, weights.start_plan)


class SCAIL2_OT_get_weights(Operator):
    """Download the SCAIL-2 weights that suit this GPU from Hugging Face into the weights folder (resumes an """ \
        """interrupted download; every file is checked against the hub's SHA-256)"""
    bl_idname = "scail2.get_weights"
    bl_label = "Get Weights"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        if weights.download_running():
            cls.poll_message_set("The weights are being downloaded")
            return False
        return _needs_python(cls, context)

    def execute(self, context):
        return _start(self, context, weights.start_download)


class SCAIL2_OT_cancel_get_weights(Operator):
    """Stop the download; the part already downloaded is kept and Get Weights continues from it"""
    bl_idname = "scail2.cancel_get_weights"
    bl_label = "Cancel Download"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        return weights.download_running()

    def execute(self, context):
        weights.cancel_download()
        return {'FINISHED'}


classes = (
    SCAIL2_OT_show_weights_plan,
    SCAIL2_OT_get_weights,
    SCAIL2_OT_cancel_get_weights,
)
