# SPDX-License-Identifier: GPL-3.0-or-later
"""Import a finished SCAIL-2 job: an image strip timed to the driving strip, a camera plane, or both.

Thin: ``runtime.result_plan.plan_import`` reads the scene and checks everything
without changing any Blender data; only then does
``runtime.result_create.create_import`` add the strip and plane, undoing its own
work if anything fails half-way. The operator is one undo step.
"""

__all__ = (
    "SCAIL2_OT_import_result",
    "classes",
)

from bpy.props import (
    BoolProperty,
    EnumProperty,
    FloatProperty,
    IntProperty,
    StringProperty,
)
from bpy.types import Operator

from .. import compat
from ..core.results import ResultError
from ..runtime.result_create import create_import, viewport_hint
from ..runtime.result_plan import plan_import


class SCAIL2_OT_import_result(Operator):
    """Bring a finished SCAIL-2 job into the scene as an image strip, a camera plane, or both"""
    bl_idname = "scail2.import_result"
    bl_label = "Import Result"
    bl_options = {'REGISTER', 'UNDO'}

    filepath: StringProperty(
        name="Manifest",
        description="The job's manifest.json (or its job folder)",
        subtype='FILE_PATH',
    )
    filter_glob: StringProperty(default="*.json", options={'HIDDEN'})
    form: EnumProperty(
        name="Import As",
        items=(
            ('STRIP', "Image Strip", "An image strip in the sequencer, above the driving strip"),
            ('PLANE', "Camera Plane", "A plane parented to the camera, filling its view"),
            ('BOTH', "Both", "An image strip and a camera plane"),
        ),
        default='STRIP',
    )
    driving_strip: StringProperty(
        name="Driving Strip",
        description=(
            "Strip the result is timed to, scene frame by scene frame. "
            "Empty: the strip that shows the job's driving clip, if there is one"
        ),
    )
    frame_start: IntProperty(
        name="Start Frame",
        description="Scene frame of the first generated frame when there is no driving strip "
                    "(default: the current frame)",
    )
    camera: StringProperty(
        name="Camera",
        description="Camera the plane is parented to. Empty: the scene's camera",
    )
    distance: FloatProperty(
        name="Distance",
        description="How far in front of the camera the plane stands",
        default=10.0, min=0.001, soft_max=1000.0,
        subtype='DISTANCE', unit='LENGTH',
    )
    fill_mode: EnumProperty(
        name="Framing",
        items=(
            ('FILL', "Fill", "Cover the camera frame; the image spills over two sides when aspects differ"),
            ('FIT', "Fit", "Show the whole image inside the camera frame"),
        ),
        default='FILL',
    )
    shading: EnumProperty(
        name="Shading",
        items=(
            ('EMISSION', "Emission", "Show the frames as they are, unaffected by lights, casting no shadow"),
            ('SHADED', "Shaded", "Principled shading: the frames are lit by the scene"),
        ),
        default='EMISSION',
    )
    use_alpha: BoolProperty(
        name="Use Alpha",
        description="Use the frames' alpha channel for transparency, when they have one",
        default=True,
    )

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def invoke(self, context, event):
        if not self.properties.is_property_set("frame_start"):
            scene = compat.sequencer_scene(context) if self.form != 'PLANE' else context.scene
            self.frame_start = (scene or context.scene).frame_current
        if not self.filepath:
            context.window_manager.fileselect_add(self)
            return {'RUNNING_MODAL'}
        return self.execute(context)

    def draw(self, context):
        layout = self.layout
        layout.use_property_split = True
        layout.use_property_decorate = False
        layout.prop(self, "form")
        if self.form != 'PLANE':
            scene = compat.sequencer_scene(context)
            if scene is not None and scene.sequence_editor is not None:
                layout.prop_search(self, "driving_strip", scene.sequence_editor, "strips")
            else:
                layout.prop(self, "driving_strip")
        layout.prop(self, "frame_start")
        if self.form != 'STRIP':
            layout.prop_search(self, "camera", context.scene, "objects")
            layout.prop(self, "distance")
            layout.prop(self, "fill_mode")
            layout.prop(self, "shading")
            layout.prop(self, "use_alpha")

    def execute(self, context):
        frame_start = self.frame_start if self.properties.is_property_set("frame_start") else None
        try:
            plan = plan_import(
                context,
                filepath=self.filepath,
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


classes = (
    SCAIL2_OT_import_result,
)
