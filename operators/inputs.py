# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators writing a job's inputs: driving footage, masks, reference, and the identity assignment.

Thin: the choices are read from ``Scene.scail2_sources`` (see
``props.input_settings``), the work is done by ``sources.exports``, and each
export is recorded in the inputs folder's ``inputs.json`` (``core.inputs``),
from which a job takes its driving, mask and reference paths and timing.
"""

__all__ = (
    "SCAIL2_OT_assign_identity",
    "SCAIL2_OT_check_identities",
    "SCAIL2_OT_export_driving",
    "SCAIL2_OT_export_masks",
    "SCAIL2_OT_export_reference",
    "SCAIL2_OT_remove_identity",
    "classes",
)


from bpy.props import EnumProperty, IntProperty
from bpy.types import Operator

from .. import sources
from ..core.inputs import identity_names
from ..props.input_settings import assign_identity, get_settings
from ..sources import exports


class _ExportOperator:
    bl_options = {'REGISTER'}
    export = None  # one of sources.exports' export functions: (context) -> (level, message)

    def execute(self, context):
        window = context.window
        if window is not None:
            window.cursor_set('WAIT')
        try:
            level, message = type(self).export(context)
        except sources.ExportError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        finally:
            if window is not None:
                window.cursor_set('DEFAULT')
        self.report({level}, message)
        return {'FINISHED'}


class SCAIL2_OT_export_driving(_ExportOperator, Operator):
    """Write the driving footage for SCAIL-2: the active strip, the sequencer output or a camera's view"""
    bl_idname = "scail2.export_driving"
    bl_label = "Export Driving"
    export = exports.export_driving

    @classmethod
    def poll(cls, context):
        problem = exports.driving_problem(context)
        if problem:
            cls.poll_message_set(problem)
        return not problem


class SCAIL2_OT_export_masks(_ExportOperator, Operator):
    """Write the driving mask for the exported driving footage and check its identities"""
    bl_idname = "scail2.export_masks"
    bl_label = "Export Masks"
    export = exports.export_masks


class SCAIL2_OT_export_reference(_ExportOperator, Operator):
    """Write the reference still for SCAIL-2 (as chosen in the SCAIL panel), with its mask where it has one"""
    bl_idname = "scail2.export_reference"
    bl_label = "Export Reference"
    export = exports.export_reference


class SCAIL2_OT_check_identities(Operator):
    """Check that every identity moving in the driving mask is bound by the reference mask"""
    bl_idname = "scail2.check_identities"
    bl_label = "Check Identities"
    bl_options = {'REGISTER'}

    def execute(self, context):
        scene = context.scene
        try:
            ok, line = exports.record_check(scene, exports.inputs_folder(context, scene))
        except sources.ExportError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        self.report({'INFO' if ok else 'WARNING'}, line)
        return {'FINISHED'}


class SCAIL2_OT_preview_mask(Operator):
    """Show the driving mask at the current frame (the identities rendered, or the mask strip), """ \
        """to check the colours before exporting"""
    bl_idname = "scail2.preview_mask"
    bl_label = "Preview Mask"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        src = get_settings(context.scene)
        if src.mask_source == 'MASK_STRIP':
            if exports.mask_strip(context, src)[1] is None:
                cls.poll_message_set("Choose the mask strip")
                return False
            return True
        if not src.identities:
            cls.poll_message_set("Assign objects or collections to identities first")
            return False
        if (src.driving_camera or context.scene.camera) is None:
            cls.poll_message_set("The scene needs a camera")
            return False
        return True

    def execute(self, context):
        try:
            level, message = exports.preview_mask(context)
        except sources.ExportError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        self.report({level}, message)
        return {'FINISHED'}


class SCAIL2_OT_assign_identity(Operator):
    """Make the selected objects (or the active collection) one identity of the colour masks"""
    bl_idname = "scail2.assign_identity"
    bl_label = "Assign Identity"
    bl_options = {'REGISTER', 'UNDO'}

    identity: IntProperty(name="Identity", min=1, max=6, default=1)
    target: EnumProperty(
        name="Target",
        items=(
            ('SELECTED', "Selected Objects", "Each selected object, with its children"),
            ('COLLECTION', "Active Collection", "Every object of the active collection"),
        ),
        default='SELECTED',
    )

    def execute(self, context):
        items = get_settings(context.scene).identities
        if self.target == 'COLLECTION':
            collection = context.collection
            if collection is None or collection == context.scene.collection:
                self.report({'ERROR'}, "Make a collection (not the scene collection) active")
                return {'CANCELLED'}
            targets = [('COLLECTION', collection)]
        else:
            targets = [('OBJECT', obj) for obj in context.selected_objects]
            if not targets:
                self.report({'ERROR'}, "Select the objects of one character")
                return {'CANCELLED'}
        assign_identity(items, targets, self.identity)
        self.report({'INFO'}, "{:d} assigned to identity {:s}".format(len(targets), identity_names([self.identity])))
        return {'FINISHED'}


class SCAIL2_OT_remove_identity(Operator):
    """Remove an entry of the identity assignment"""
    bl_idname = "scail2.remove_identity"
    bl_label = "Remove Identity"
    bl_options = {'REGISTER', 'UNDO'}

    index: IntProperty(name="Index", default=-1, description="Entry to remove; -1: the active one")

    def execute(self, context):
        settings = get_settings(context.scene)
        index = settings.active_identity_index if self.index < 0 else self.index
        if not 0 <= index < len(settings.identities):
            self.report({'ERROR'}, "No identity entry {:d}".format(index))
            return {'CANCELLED'}
        settings.identities.remove(index)
        settings.active_identity_index = max(0, min(index, len(settings.identities) - 1))
        return {'FINISHED'}


classes = (
    SCAIL2_OT_export_driving,
    SCAIL2_OT_export_masks,
    SCAIL2_OT_export_reference,
    SCAIL2_OT_check_identities,
    SCAIL2_OT_preview_mask,
    SCAIL2_OT_assign_identity,
    SCAIL2_OT_remove_identity,
)
