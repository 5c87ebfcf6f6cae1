# SPDX-License-Identifier: GPL-3.0-or-later
"""The add-on's preferences as the rest of the add-on reads them, and its folders.

The preferences themselves (``SCAIL2_AddonPreferences``: where the backend lives
and how it should run) are declared and drawn in ``panels/preferences.py``. The
folders: the add-on's own code folder (``addon_dir``), its user data folder
(``data_dir``, under Blender's extension user directory, never next to the
code) and the folder results are written to (``effective_output_dir``).
"""

__all__ = (
    "ADDON_ID",
    "addon_dir",
    "data_dir",
    "effective_output_dir",
    "get_preferences",
    "resolved_python",
    "resolved_segmentation_weights",
    "resolved_weights_dir",
)

import os

import bpy

# This module sits at the top of the package, so its package is the add-on's
# module name, e.g. ``bl_ext.user_default.scail2``.
ADDON_ID = __package__

# Sub-folder of the data folder used when no output folder is chosen.
DEFAULT_OUTPUT_SUBDIR = "output"


def addon_dir():
    """The add-on's installed folder (holds the ``backend`` package)."""
    return os.path.dirname(os.path.abspath(__file__))


def data_dir():
    """The add-on's user data folder, created if needed."""
    return bpy.utils.extension_path_user(ADDON_ID, create=True)


def get_preferences(context=None):
    """The add-on's preferences (``SCAIL2_AddonPreferences``)."""
    context = context or bpy.context
    return context.preferences.addons[ADDON_ID].preferences


def _absolute(path):
    path = bpy.path.abspath(os.path.expanduser(path.strip()))
    return os.path.normpath(path) if path else ""


def resolved_python(prefs):
    """The backend Python as an absolute path, or "" when not set."""
    return _absolute(prefs.python_path)


def resolved_weights_dir(prefs):
    """The weights folder as an absolute path, or "" when not set."""
    return _absolute(prefs.weights_dir)


def resolved_segmentation_weights(prefs):
    """``(SAM 3 folder, SAM 2 folder)`` as absolute paths, "" where not set."""
    return _absolute(prefs.sam3_weights_dir), _absolute(prefs.sam2_weights_dir)


def effective_output_dir(prefs):
    """The folder results are written to: the chosen one, else a default in the data folder.

    Does not create the folder.
    """
    chosen = _absolute(prefs.output_dir)
    if chosen:
        return chosen
    return os.path.join(bpy.utils.extension_path_user(ADDON_ID), DEFAULT_OUTPUT_SUBDIR)
