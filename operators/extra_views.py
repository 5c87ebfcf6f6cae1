# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the Extra Views list: add, remove and move views, export them, render a turnaround."""

__all__ = (
    "classes",
)

import os

from bpy.props import CollectionProperty, EnumProperty, StringProperty
from bpy.types import Operator, OperatorFileListElement
from bpy_extras.io_utils import ImportHelper

from .. import sources
from ..core.extra_views import MAX_EXTRA_VIEWS
from ..props.extra_views import get_extra_views
from ..runtime import input_render, turnaround
from ..sources import exports
from ..sources.extra_views import add_view
from ..sources.reference import REFERENCE_EXTENSIONS
from .inputs import _ExportOperator


def _room_left(context):
    return context.scene is not None and len(get_extra_views(context.scene).views) < MAX_EXTRA_VIEWS


class SCAIL2_OT_add_extra_view(Operator):
    """Add an extra view of the character (a job takes up to 8)"""
    bl_idname = "scail2.add_extra_view"
    bl_label = "Add Extra View"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        if not _room_left(context):
            cls.poll_message_set("A job takes at most {:d} extra views".format(MAX_EXTRA_VIEWS))
            return False
        return True

    def execute(self, context):
        add_view(context.scene)
        return {'FINISHED'}


class SCAIL2_OT_add_extra_view_files(Operator, ImportHelper):
    """Add one extra view per image file chosen"""
    bl_idname = "scail2.add_extra_view_files"
    bl_label = "Add View Images"
    bl_options = {'REGISTER', 'UNDO'}

    filter_glob: StringProperty(default=";".join("*" + ext for ext in sorted(REFERENCE_EXTENSIONS)),
                                options={'HIDDEN'})
    files: CollectionProperty(type=OperatorFileListElement, options={'HIDDEN', 'SKIP_SAVE'})
    directory: StringProperty(subtype='DIR_PATH', options={'HIDDEN', 'SKIP_SAVE'})

    @classmethod
    def poll(cls, context):
        return _room_left(context)

    def execute(self, context):
        names = [f.name for f in self.files if f.name] or [os.path.basename(self.filepath)]
        folder = self.directory or os.path.dirname(self.filepath)
        room = MAX_EXTRA_VIEWS - len(get_extra_views(context.scene).views)
        for name in names[:room]:
            add_view(context.scene, source='FILE', file=os.path.join(folder, name))
        if len(names) > room:
            self.report({'WARNING'}, "A job takes at most {:d} extra views: added {:d} of {:d}".format(
                MAX_EXTRA_VIEWS, room, len(names)))
        return {'FINISHED'}


class SCAIL2_OT_remove_extra_view(Operator):
    """Remove the active extra view"""
    bl_idname = "scail2.remove_extra_view"
    bl_label = "Remove Extra View"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        return context.scene is not None and len(get_extra_views(context.scene).views) > 0

    def execute(self, context):
        extra = get_extra_views(context.scene)
        index = min(extra.active_index, len(extra.views) - 1)
        extra.views.remove(index)
        extra.active_index = max(0, min(index, len(extra.views) - 1))
        return {'FINISHED'}


class SCAIL2_OT_move_extra_view(Operator):
    """Move the active extra view up or down the list (the order the job gets them in)"""
    bl_idname = "scail2.move_extra_view"
    bl_label = "Move Extra View"
    bl_options = {'REGISTER', 'UNDO'}

    direction: EnumProperty(items=(('UP', "Up", ""), ('DOWN', "Down", "")), name="Direction")

    @classmethod
    def poll(cls, context):
        return context.scene is not None and len(get_extra_views(context.scene).views) > 1

    def execute(self, context):
        extra = get_extra_views(context.scene)
        index = extra.active_index
        other = index - 1 if self.direction == 'UP' else index + 1
        if not (0 <= index < len(extra.views) and 0 <= other < len(extra.views)):
            return {'CANCELLED'}
        extra.views.move(index, other)
        extra.active_index = other
        return {'FINISHED'}


class SCAIL2_OT_export_extra_views(_ExportOperator, Operator):
    """Write the extra views with their masks (views whose source is unchanged are kept) and check them"""
    bl_idname = "scail2.export_extra_views"
    bl_label = "Export Extra Views"
    export = exports.export_views


class SCAIL2_OT_render_turnaround(Operator):
    """Render views around the character object at the chosen angles, with its identity mask, as extra views. """ \
        """Blender stays usable while they render"""
    bl_idname = "scail2.render_turnaround"
    bl_label = "Render Turnaround"
    bl_options = {'REGISTER', 'UNDO'}

    @classmethod
    def poll(cls, context):
        if context.scene is None or get_extra_views(context.scene).turnaround_object is None:
            cls.poll_message_set("Choose the character object first")
            return False
        if input_render.active() is not None:
            cls.poll_message_set("Blender is rendering inputs: wait for it or cancel it")
            return False
        return True

    def execute(self, context):
        try:
            level, message = turnaround.start_turnaround(context)
        except sources.ExportError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        self.report({level}, message)
        return {'FINISHED'} if level != 'ERROR' else {'CANCELLED'}


classes = (
    SCAIL2_OT_add_extra_view,
    SCAIL2_OT_add_extra_view_files,
    SCAIL2_OT_remove_extra_view,
    SCAIL2_OT_move_extra_view,
    SCAIL2_OT_export_extra_views,
    SCAIL2_OT_render_turnaround,
)
