# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the setup: check the backend, set up its environment, check the weights, open the output folder.

Thin: ``runtime.setup`` keeps the session's checks and runs the commands in the
background; its timer redraws the preferences while they run.
"""

__all__ = (
    "SCAIL2_OT_cancel_setup_backend",
    "SCAIL2_OT_check_backend",
    "SCAIL2_OT_check_weights",
    "SCAIL2_OT_open_output_folder",
    "SCAIL2_OT_setup_backend",
    "classes",
)

import os

import bpy
from bpy.types import Operator

from .. import preferences
from ..core.util import one_line
from ..runtime import setup


class SCAIL2_OT_check_backend(Operator):
    """Run the backend Python once to confirm that the SCAIL-2 backend answers"""
    bl_idname = "scail2.check_backend"
    bl_label = "Check Backend"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        if not preferences.get_preferences(context).python_path.strip():
            cls.poll_message_set("Choose the backend Python in the add-on preferences first")
            return False
        return True

    def execute(self, context):
        window = context.window
        if window is not None:
            window.cursor_set('WAIT')
        try:
            result = setup.check_backend(preferences.get_preferences(context))
        finally:
            if window is not None:
                window.cursor_set('DEFAULT')
        if result.ok:
            self.report({'INFO'}, result.message)
            return {'FINISHED'}
        self.report({'ERROR'}, result.message)
        return {'CANCELLED'}


class SCAIL2_OT_setup_backend(Operator):
    """Create the backend's Python environment in your Blender user folder (with the Backend Python when set) """ \
        """and install PyTorch and the backend's packages into it (needs online access; several GB)"""
    bl_idname = "scail2.setup_backend"
    bl_label = "Set Up Backend"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        if setup.setup_running():
            cls.poll_message_set("The backend is being set up")
            return False
        return True

    def execute(self, context):
        try:
            message = setup.start_setup(preferences.get_preferences(context))
        except setup.SetupError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        self.report({'INFO'}, message)
        return {'FINISHED'}


class SCAIL2_OT_cancel_setup_backend(Operator):
    """Stop setting up the backend"""
    bl_idname = "scail2.cancel_setup_backend"
    bl_label = "Cancel Setup"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        return setup.setup_running()

    def execute(self, context):
        setup.cancel_setup()
        return {'FINISHED'}


class SCAIL2_OT_check_weights(Operator):
    """Ask the backend what it finds in the weights folder (which files, which layout, what is missing)"""
    bl_idname = "scail2.check_weights"
    bl_label = "Check Weights"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        prefs = preferences.get_preferences(context)
        if not prefs.python_path.strip() or not prefs.weights_dir.strip():
            cls.poll_message_set("Choose the backend Python and the weights folder first")
            return False
        if setup.weights_check_running():
            cls.poll_message_set("The weights are being checked")
            return False
        return True

    def execute(self, context):
        try:
            setup.start_weights_check(preferences.get_preferences(context))
        except setup.SetupError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        return {'FINISHED'}


class SCAIL2_OT_open_output_folder(Operator):
    """Open the folder where SCAIL-2 saves its results, creating it if needed"""
    bl_idname = "scail2.open_output_folder"
    bl_label = "Open Output Folder"
    bl_options = {'REGISTER'}

    def execute(self, context):
        folder = preferences.effective_output_dir(preferences.get_preferences(context))
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as ex:
            self.report({'ERROR'}, "Could not create the output folder ({:s}): {:s}".format(
                ex.strerror or str(ex), folder,
            ))
            return {'CANCELLED'}
        try:
            return bpy.ops.wm.path_open(filepath=folder)
        except RuntimeError as ex:
            self.report({'ERROR'}, one_line(str(ex)))
            return {'CANCELLED'}


classes = (
    SCAIL2_OT_check_backend,
    SCAIL2_OT_open_output_folder,
    SCAIL2_OT_setup_backend,
    SCAIL2_OT_cancel_setup_backend,
    SCAIL2_OT_check_weights,
)
