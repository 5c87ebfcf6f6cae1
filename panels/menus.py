# SPDX-License-Identifier: GPL-3.0-or-later
"""Import Result where artists look for it: the sequencer's and the 3D viewport's Add menus.

Blender's own menus (``SEQUENCER_MT_add``, ``VIEW3D_MT_add``) get one entry each,
appended at register and removed at unregister. From the sequencer the result
comes as an image strip, from the 3D viewport as a camera plane; the file browser
shows every option (``props.import_options``) either way.
"""

__all__ = (
    "register",
    "unregister",
)

import bpy

OPERATOR = "scail2.import_result"


def _add_entry(layout, form):
    props = layout.operator(OPERATOR, text="SCAIL-2 Result", icon='IMPORT')
    props.form = form
    props.filepath = ""  # always the file browser, never the file of the last import


def _sequencer_add(self, context):
    self.layout.separator()
    _add_entry(self.layout, 'STRIP')


def _view3d_add(self, context):
    self.layout.separator()
    _add_entry(self.layout, 'PLANE')


_MENUS = (("SEQUENCER_MT_add", _sequencer_add), ("VIEW3D_MT_add", _view3d_add))


def register():
    for menu, draw in _MENUS:
        getattr(bpy.types, menu).append(draw)


def unregister():
    for menu, draw in _MENUS:
        getattr(bpy.types, menu).remove(draw)
