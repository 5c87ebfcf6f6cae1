# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators writing a job's inputs: driving footage, masks, reference, and the identity assignment.

Thin: the choices are read from ``Scene.scail2_sources`` (see
``sources.settings``), the work is done by ``sources``, and each export is
recorded in the inputs folder's ``inputs.json`` (``sources.load_inputs``),
from which a job takes its driving, mask and reference paths and timing
(``sources.job_fields``).
"""

__all__ = (
    "SCAIL2_OT_assign_identity",
    "SCAIL2_OT_check_identities",
    "SCAIL2_OT_export_driving",
    "SCAIL2_OT_export_masks",
    "SCAIL2_OT_export_reference",
    "SCAIL2_OT_remove_identity",
    "classes",
    "inputs_folder",
)

import os
import re

import bpy
from bpy.props import EnumProperty, IntProperty
from bpy.types import Operator

from .. import compat
from .. import preferences
from .. import sources
from ..sources.clip import ExportedClip, identity_names
from ..sources.masks import render_identity_frames

INPUTS_SUBDIR = "inputs"


def _safe_name(name):
    return re.sub(r"[^\w.-]+", "_", name).strip("._") or "scene"


def inputs_folder(context, scene):
    """Where exports for ``scene`` go: its chosen inputs folder, else ``<output>/inputs/<blend>_<scene>``."""
    chosen = sources.get_settings(scene).inputs_dir.strip()
    if chosen:
        return os.path.normpath(bpy.path.abspath(chosen))
    blend = os.path.splitext(os.path.basename(bpy.data.filepath))[0] or "untitled"
    output = preferences.effective_output_dir(preferences.get_preferences(context))
    return os.path.join(output, INPUTS_SUBDIR, _safe_name(blend + "_" + scene.name))


def _frame_range(scene):
    if scene.use_preview_range:
        return scene.frame_preview_start, scene.frame_preview_end
    return scene.frame_start, scene.frame_end


def _record_check(scene, folder):
    """Run the identity check on what ``folder`` holds; store and return ``(ok, line)``."""
    inputs = sources.load_inputs(folder)
    inputs["mode"] = sources.get_settings(scene).mode  # the mode the job will be run in
    ok, line = sources.check_identities(inputs)
    sources.get_settings(scene).last_check = line
    return ok, line


class _ExportOperator:
    bl_options = {'REGISTER'}

    def run(self, context):
        raise NotImplementedError

    def execute(self, context):
        window = context.window
        if window is not None:
            window.cursor_set('WAIT')
        try:
            level, message = self.run(context)
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

    @classmethod
    def poll(cls, context):
        settings = sources.get_settings(context.scene)
        if settings.driving_source == 'CAMERA':
            if (settings.driving_camera or context.scene.camera) is None:
                cls.poll_message_set("Choose a driving camera (or give the scene a camera)")
                return False
            return True
        scene = compat.sequencer_scene(context)
        if scene is None or scene.sequence_editor is None:
            cls.poll_message_set("The sequencer has no strips")
            return False
        if settings.driving_source == 'STRIP' and scene.sequence_editor.active_strip is None:
            cls.poll_message_set("Make the driving footage the active strip")
            return False
        return True

    def run(self, context):
        scene = context.scene
        settings = sources.get_settings(scene)
        folder = inputs_folder(context, scene)
        target = os.path.join(folder, "driving")
        if settings.driving_source == 'CAMERA':
            start, end = _frame_range(scene)
            clip = sources.render_camera_clip(
                scene, settings.driving_camera or scene.camera, start, end, target,
                engine=settings.engine, max_size=settings.max_size,
            )
        else:
            seq_scene = compat.sequencer_scene(context)
            if settings.driving_source == 'STRIP':
                clip = sources.export_strip(
                    seq_scene, seq_scene.sequence_editor.active_strip, target, max_size=settings.max_size)
            else:
                start, end = _frame_range(seq_scene)
                clip = sources.export_sequencer_range(seq_scene, start, end, target, max_size=settings.max_size)
        # A mask made for other driving frames no longer lines up.
        sources.save_inputs(folder, driving=clip, driving_mask=None, driving_mask_mode=None, mode=settings.mode)
        return 'INFO', clip.note


class SCAIL2_OT_export_masks(_ExportOperator, Operator):
    """Write the driving mask for the exported driving footage and check its identities"""
    bl_idname = "scail2.export_masks"
    bl_label = "Export Masks"

    def run(self, context):
        scene = context.scene
        settings = sources.get_settings(scene)
        folder = inputs_folder(context, scene)
        inputs = sources.load_inputs(folder)
        if not inputs.get("driving"):
            raise sources.ExportError("Export the driving footage first")
        driving = ExportedClip.from_dict(inputs["driving"])
        target = os.path.join(folder, "driving_mask")
        source = settings.mask_source
        if source == 'NONE':
            sources.save_inputs(folder, driving_mask=None, driving_mask_mode=None, mode=settings.mode)
            mask, note = None, sources.NO_MASK
        elif source == 'IDENTITIES':
            camera = settings.driving_camera or scene.camera
            mask = sources.render_driving_masks(
                scene, camera, driving, target, settings.mode, max_size=settings.max_size)
            note = mask.note
        elif source == 'MASK_STRIP':
            seq_scene = compat.sequencer_scene(context)
            editor = seq_scene.sequence_editor if seq_scene is not None else None
            strip = editor.strips_all.get(settings.mask_strip) if editor is not None else None
            if strip is None:
                raise sources.ExportError("No strip named {:s} in the sequencer".format(settings.mask_strip or '""'))
            mask = sources.export_mask_strip(
                seq_scene, strip, driving, target, settings.mode, max_size=settings.max_size)
            note = mask.note
        else:
            mask = sources.export_mask_file(settings.mask_file, driving)
            note = mask.note
        if mask is not None:
            made_for = None if source == 'FILE' else settings.mode  # a file's backgrounds are its own
            sources.save_inputs(folder, driving_mask=mask, driving_mask_mode=made_for, mode=settings.mode)
        if sources.load_inputs(folder).get("reference"):
            ok, line = _record_check(scene, folder)
            return ('INFO' if ok else 'WARNING'), "{:s}. {:s}".format(note, line)
        return 'INFO', note


class SCAIL2_OT_export_reference(_ExportOperator, Operator):
    """Write the reference still for SCAIL-2 (as chosen in the SCAIL panel), with its mask where it has one"""
    bl_idname = "scail2.export_reference"
    bl_label = "Export Reference"

    def run(self, context):
        scene = context.scene
        settings = sources.get_settings(scene)
        folder = inputs_folder(context, scene)
        target = os.path.join(folder, "reference")
        source = settings.reference_source
        if source == 'FILE':
            still = sources.reference_from_file(settings.reference_file)
        elif source == 'IMAGE':
            still = sources.reference_from_image(settings.reference_image, target)
        elif source == 'STRIP':
            seq_scene = compat.sequencer_scene(context)
            editor = seq_scene.sequence_editor if seq_scene is not None else None
            if editor is None or editor.active_strip is None:
                raise sources.ExportError("Make the reference picture the active strip")
            still = sources.reference_from_strip(
                seq_scene, editor.active_strip, seq_scene.frame_current, target, max_size=settings.max_size)
        else:
            camera = settings.reference_camera or scene.camera
            still = sources.render_reference(
                scene, camera, target, settings.mode, engine=settings.reference_engine,
                max_size=settings.max_size, with_mask=settings.reference_mask,
            )
        made_for = settings.mode if still.mask_path else None
        if source != 'CAMERA' and settings.reference_mask_file.strip():
            still, made_for = sources.attach_reference_mask(still, settings.reference_mask_file)
        sources.save_inputs(folder, reference=still, reference_mask_mode=made_for, mode=settings.mode)
        ok, line = _record_check(scene, folder)
        return ('INFO' if ok else 'WARNING'), "{:s}. {:s}".format(still.note, line)


class SCAIL2_OT_check_identities(Operator):
    """Check that every identity moving in the driving mask is bound by the reference mask"""
    bl_idname = "scail2.check_identities"
    bl_label = "Check Identities"
    bl_options = {'REGISTER'}

    def execute(self, context):
        scene = context.scene
        try:
            ok, line = _record_check(scene, inputs_folder(context, scene))
        except sources.ExportError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        self.report({'INFO' if ok else 'WARNING'}, line)
        return {'FINISHED'}


def _mask_strip(context, src):
    seq_scene = compat.sequencer_scene(context)
    editor = seq_scene.sequence_editor if seq_scene is not None else None
    strip = editor.strips_all.get(src.mask_strip) if editor is not None and src.mask_strip else None
    return seq_scene, strip


class SCAIL2_OT_preview_mask(Operator):
    """Show the driving mask at the current frame (the identities rendered, or the mask strip), """ \
        """to check the colours before exporting"""
    bl_idname = "scail2.preview_mask"
    bl_label = "Preview Mask"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        src = sources.get_settings(context.scene)
        if src.mask_source == 'MASK_STRIP':
            if _mask_strip(context, src)[1] is None:
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
        scene = context.scene
        src = sources.get_settings(scene)
        camera = src.driving_camera or scene.camera
        path = os.path.join(inputs_folder(context, scene), "mask_preview.png")
        background = sources.clip.backgrounds(src.mode)[0]
        try:
            if src.mask_source == 'MASK_STRIP':
                seq_scene, strip = _mask_strip(context, src)
                path, found = sources.preview_mask_strip(
                    seq_scene, strip, seq_scene.frame_current, os.path.join(inputs_folder(context, scene),
                                                                            "mask_preview"),
                    src.mode, max_size=src.max_size)
                counts, warnings = [{"identities": found}], []
            else:
                counts, warnings = render_identity_frames(scene, camera, [scene.frame_current], [path], background,
                                                          max_size=src.max_size)
        except sources.ExportError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        src.mask_preview = path
        found = sorted(counts[0]["identities"])
        names = ", ".join("{:d} ({:s})".format(i, sources.clip.PALETTE_NAMES[i - 1]) for i in found) or "none"
        self.report({'WARNING'} if warnings else {'INFO'}, "; ".join(["Identities in view: " + names, *warnings]))
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
        items = sources.get_settings(context.scene).identities
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
        for kind, block in targets:
            item = next((i for i in items if i.target == kind and (i.object if kind == 'OBJECT' else i.collection)
                         == block), None)
            if item is None:
                item = items.add()
                item.target = kind
                if kind == 'OBJECT':
                    item.object = block
                else:
                    item.collection = block
            item.identity = self.identity
        self.report({'INFO'}, "{:d} assigned to identity {:s}".format(len(targets), identity_names([self.identity])))
        return {'FINISHED'}


class SCAIL2_OT_remove_identity(Operator):
    """Remove an entry of the identity assignment"""
    bl_idname = "scail2.remove_identity"
    bl_label = "Remove Identity"
    bl_options = {'REGISTER', 'UNDO'}

    index: IntProperty(name="Index", default=-1, description="Entry to remove; -1: the active one")

    def execute(self, context):
        settings = sources.get_settings(context.scene)
        index = settings.active_identity_index if self.index < 0 else self.index
        if not 0 <= index < len(settings.identities):
            self.report({'ERROR'}, "No identity entry {:d}".format(index))
            return {'CANCELLED'}
        settings.identities.remove(index)
        settings.active_identity_index = max(0, min(index, len(settings.identities) - 1))
        return {'FINISHED'}


classes = (
    # The settings are registered with the operators that use them.
    *sources.classes,
    SCAIL2_OT_export_driving,
    SCAIL2_OT_export_masks,
    SCAIL2_OT_export_reference,
    SCAIL2_OT_check_identities,
    SCAIL2_OT_preview_mask,
    SCAIL2_OT_assign_identity,
    SCAIL2_OT_remove_identity,
)
