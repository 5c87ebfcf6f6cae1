# SPDX-License-Identifier: GPL-3.0-or-later
"""Import a finished SCAIL-2 job: an image strip timed to the driving strip, a camera plane, or both.

Thin: ``runtime.result_plan.plan_import`` reads the scene and checks everything
without changing any Blender data; only then does
``runtime.result_create.create_import`` add the strip and plane, undoing its own
work if anything fails half-way. The operator is one undo step.
"""

__all__ = (
    "SCAIL2_FH_import_result",
    "SCAIL2_OT_import_result",
    "classes",
)

import os

from bpy.props import IntProperty, StringProperty
from bpy.types import FileHandler, Operator
from bpy_extras.io_utils import ImportHelper

from .. import compat, protocol
from ..core.results import ResultError
from ..props.import_options import ImportOptions
from ..runtime.result_create import create_import, viewport_hint
from ..runtime.result_plan import plan_import

# Dropped on the 3D viewport a result becomes a camera plane; anywhere else an image strip.
FORM_OF_AREA = {'VIEW_3D': 'PLANE', 'SEQUENCE_EDITOR': 'STRIP'}


class SCAIL2_OT_import_result(ImportOptions, ImportHelper, Operator):
    """Bring a finished SCAIL-2 job into the scene as an image strip, a camera plane, or both"""
    bl_idname = "scail2.import_result"
    bl_label = "Import Result"
    bl_options = {'REGISTER', 'UNDO'}

    filter_glob: StringProperty(default="*.json", options={'HIDDEN'})
    driving_strip: StringProperty(
        name="Driving Strip",
        description=(
            "Strip the result is timed to, scene frame by scene frame. "
            "Empty: the strip that shows the job's driving clip, if there is one"
        ),
        options={'SKIP_SAVE'},  # this scene's: never carried over from an import elsewhere
    )
    frame_start: IntProperty(
        name="Start Frame",
        description="Scene frame of the first generated frame when there is no driving strip "
                    "(default: the current frame)",
        options={'SKIP_SAVE'},  # unset means the current frame, at every import
    )
    camera: StringProperty(
        name="Camera",
        description="Camera the plane is parented to. Empty: the scene's camera",
        options={'SKIP_SAVE'},
    )

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def invoke(self, context, event):
        if self.filepath:
            # A file dropped on an editor (SCAIL2_FH_import_result; the menus pass no file): the form that editor
            # shows. The Adjust Last Operation panel offers the others.
            area = context.area
            self.form = FORM_OF_AREA.get(area.type if area is not None else "", self.form)
        if not self.properties.is_property_set("frame_start"):
            scene = compat.sequencer_scene(context) if self.form != 'PLANE' else context.scene
            self.frame_start = (scene or context.scene).frame_current
        if not self.filepath:
            return ImportHelper.invoke(self, context, event)
        return self.execute(context)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        ImportOptions.draw_form(self, layout)
        if self.form != 'PLANE':
            scene = compat.sequencer_scene(context)
            if scene is not None and scene.sequence_editor is not None:
                layout.prop_search(self, "driving_strip", scene.sequence_editor, "strips")
            else:
                layout.prop(self, "driving_strip")
        layout.prop(self, "frame_start")
        ImportOptions.draw_plane_options(self, layout, context)

    def execute(self, context):
        filepath = self.filepath
        if os.path.basename(filepath) == protocol.REVIEW_NAME:  # a take's review, beside its manifest
            filepath = os.path.dirname(filepath)  # the job folder it lies in
        frame_start = self.frame_start if self.properties.is_property_set("frame_start") else None
        try:
            plan = plan_import(
                context,
                filepath=filepath,
                form=self.form,
                driving_strip=self.driving_strip,
                frame_start=frame_start,
                camera=self.camera,
                distance=self.distance,
                fill_mode=self.fill_mode,
            )
            strip, plane = create_import(plan, context, shading=self.shading, use_alpha=self.use_alpha)
        except ResultError as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        for warning in plan.warnings:
            self.report({'WARNING'}, warning)
        done = []
        if strip is not None:
            left, right = compat.strip_handles(strip)
            done.append("strip {:s} on channel {:d}, frames {:d}-{:d}".format(
                strip.name, strip.channel, left, right - 1))
        if plane is not None:
            done.append("plane {:s} under camera {:s}".format(plane.name, plan.camera.name))
            hint = viewport_hint(context)
            if hint:
                self.report({'INFO'}, hint)
        self.report({'INFO'}, "Imported {:s}: {:s}".format(plan.result.job_id, "; ".join(done)))
        return {'FINISHED'}


class SCAIL2_FH_import_result(FileHandler):
    """A job folder's manifest.json or review.json dropped on the sequencer or the 3D viewport: its result"""
    bl_idname = "SCAIL2_FH_import_result"
    bl_label = "SCAIL-2 Result"
    bl_import_operator = "scail2.import_result"
    bl_file_extensions = ".json"

    @classmethod
    def poll_drop(cls, context):
        return context.area is not None and context.area.type in FORM_OF_AREA


classes = (
    SCAIL2_OT_import_result,
    SCAIL2_FH_import_result,
)
