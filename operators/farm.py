# SPDX-License-Identifier: GPL-3.0-or-later
"""Send to Farm: the scene's generation as a render-farm bundle instead of a local job.

Thin: ``runtime.farm`` builds the job (as Generate does, after the same exports), has the backend write
the bundle and adds the history entry that *Import Again* imports from once the farm has made the frames.
"""

__all__ = (
    "SCAIL2_OT_send_to_farm",
    "classes",
)

from bpy.props import StringProperty
from bpy.types import Operator

from ..runtime import farm
from .common import start_job
from .jobs import export_inputs


class SCAIL2_OT_send_to_farm(Operator):
    """Write this shot as a render-farm bundle (its inputs, the job and OpenJD and Flamenco job files) """ \
        """instead of generating it here. Import it from the History when the farm has finished"""
    bl_idname = "scail2.send_to_farm"
    bl_label = "Send to Farm"
    bl_options = {'REGISTER'}

    directory: StringProperty(
        name="Farm Folder",
        description="The farm folder to add this shot to, on storage the farm shares (shots sent to one folder "
                    "make one farm job); empty: a new folder in the output folder's farm folder",
        subtype='DIR_PATH',
        options={'SKIP_SAVE'},
    )

    @classmethod
    def poll(cls, context):
        return context.scene is not None

    def execute(self, context):
        if not export_inputs(self, context, everything=False):
            return {'CANCELLED'}
        return start_job(self, lambda: farm.send_to_farm(context, self.directory))


classes = (
    SCAIL2_OT_send_to_farm,
)
