# SPDX-License-Identifier: GPL-3.0-or-later
"""The "Setup" panel of the SCAIL sidebar tab, in the Video Sequencer and the 3D Viewport.

Both panels draw the same content with :func:`draw_setup`; the sequencer one
also names the scene whose strips it works on.
"""

__all__ = (
    "SCAIL2_PT_sequencer_setup",
    "SCAIL2_PT_view3d_setup",
    "classes",
    "draw_setup",
    "draw_weights_components",
)

from bpy.types import Panel

from .. import compat
from .. import preferences
from ..core import checks
from ..runtime.setup import doctor_state, last_check
from .common import label_wrapped

_STATE_ICONS = {
    'OK': 'CHECKMARK',
    'DEFAULT': 'INFO',
    'PROBLEM': 'ERROR',
}


def _weights_elsewhere(prefs):
    """Why the weights folder here is not used, or "" (``checks.setup_status``)."""
    if prefs.worker_location == 'REMOTE':
        return "On the remote worker"
    if prefs.model_source == 'TINY':
        return "Not needed (Test Model)"
    return ""


def draw_setup(layout, context):
    """Draw the backend setup summary and its buttons into ``layout``."""
    prefs = preferences.get_preferences(context)
    python = preferences.resolved_python(prefs)
    items = checks.setup_status(
        python,
        preferences.resolved_weights_dir(prefs),
        preferences.effective_output_dir(prefs),
        output_is_default=not prefs.output_dir.strip(),
        weights_elsewhere=_weights_elsewhere(prefs),
    )

    col = layout.column(align=True)
    for item in items:
        split = col.split(factor=0.3)
        split.label(text=item.label)
        split.label(text=item.value, icon=_STATE_ICONS[item.state], translate=False)

    result = last_check(python)
    if result is not None:
        label_wrapped(layout, context, result.message, 'CHECKMARK' if result.ok else 'ERROR')
    draw_weights_components(layout, doctor_state(python, preferences.resolved_weights_dir(prefs)))

    col = layout.column(align=True)
    col.operator("scail2.check_backend", icon='CHECKMARK')
    row = col.row(align=True)
    row.operator("scail2.open_output_folder", text="Output", icon='FILE_FOLDER')
    props = row.operator("preferences.addon_show", text="Preferences", icon='PREFERENCES')
    props.module = preferences.ADDON_ID


def draw_weights_components(layout, state):
    """The latest Check Weights, one row per part of SCAIL-2: the file it is read from, or what is wrong."""
    if state is None or not state["run"].finished:
        return
    parts = checks.weights_components(state["run"].lines())
    if not parts:
        return
    col = layout.column(align=True)
    col.label(text="Weights found:")
    for part in parts:
        split = col.split(factor=0.3)
        split.label(text=part.label.capitalize())
        split.label(text=part.short, icon=_STATE_ICONS[part.state], translate=False)


class _SetupPanel:
    bl_region_type = 'UI'
    bl_category = "SCAIL"
    bl_label = "Setup"

    def draw(self, context):
        draw_setup(self.layout, context)


class SCAIL2_PT_sequencer_setup(_SetupPanel, Panel):
    bl_space_type = 'SEQUENCE_EDITOR'

    def draw(self, context):
        layout = self.layout
        scene = compat.sequencer_scene(context)
        split = layout.split(factor=0.3)
        split.label(text="Scene")
        if scene is None:
            split.label(text="None: pick a sequencer scene", icon='ERROR')
        else:
            split.label(text=scene.name, icon='SCENE_DATA', translate=False)
        draw_setup(layout, context)


class SCAIL2_PT_view3d_setup(_SetupPanel, Panel):
    bl_space_type = 'VIEW_3D'


classes = (
    SCAIL2_PT_sequencer_setup,
    SCAIL2_PT_view3d_setup,
)
