# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators running segmentation jobs: Auto Masks of the footage and of the reference, Refine Masks of a rough
mask strip, Matte of a result.

Thin: ``runtime.segmentation`` builds the jobs, ``runtime.follow`` runs them on
the worker (Blender never waits on the model) and ``runtime.segmentation`` uses
their results, through :class:`SCAIL2_OT_apply_segmentation` (one undo step).
Cancel them with ``scail2.cancel_job`` like any job.
"""

__all__ = (
    "SCAIL2_OT_apply_segmentation",
    "SCAIL2_OT_auto_masks",
    "SCAIL2_OT_auto_reference_mask",
    "SCAIL2_OT_matte_result",
    "SCAIL2_OT_refine_masks",
    "classes",
)

from bpy.props import StringProperty
from bpy.types import Operator

from .. import compat
from .. import sources
from ..core.results import ResultError
from ..core.segmentation import SegmentError
from ..props.input_settings import get_settings
from ..runtime import follow, generation, segmentation, session
from .common import HistoryOperator, history_item, start_job

# What starting a segmentation job can refuse with, as one line for the artist.
_REFUSALS = (SegmentError, sources.ExportError, session.GenerateError)


def _start(operator, context, build, *args):
    """Build a job with ``build(context, *args)`` (a ``session.JobRequest``) and queue it; the operator's return
    value."""
    return start_job(operator, lambda: follow.run_job(context, *build(context, *args)), _REFUSALS)


class SCAIL2_OT_auto_masks(Operator):
    """Find the subjects of the footage strip (SAM 3, from the text below), track them and make a """ \
        """colour-mask strip of them, used as the driving mask. Runs in the background"""
    bl_idname = "scail2.auto_masks"
    bl_label = "Auto Masks"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        scene = compat.sequencer_scene(context)
        if scene is None or scene.sequence_editor is None or not len(scene.sequence_editor.strips):
            cls.poll_message_set("The sequencer has no footage strip")
            return False
        return True

    def execute(self, context):
        return _start(self, context, segmentation.driving_masks_job)


class SCAIL2_OT_refine_masks(Operator):
    """Track the subjects of your rough mask strip through the footage (SAM 2, a box per colour where it """ \
        """first appears) and make a clean colour-mask strip of them, used as the driving mask. """ \
        """Runs in the background"""
    bl_idname = "scail2.refine_masks"
    bl_label = "Refine Masks"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        if not SCAIL2_OT_auto_masks.poll(context):
            return False
        src = get_settings(context.scene)
        if src.mask_source != 'MASK_STRIP':
            cls.poll_message_set("Set the mask to a mask strip: Refine Masks follows its rough masks")
            return False
        if not src.mask_strip:
            cls.poll_message_set("Choose the rough mask strip")
            return False
        return True

    def execute(self, context):
        return _start(self, context, segmentation.refined_masks_job)


class SCAIL2_OT_auto_reference_mask(Operator):
    """Find the subjects of the reference image (SAM 3, from the text above) and make its colour mask. """ \
        """Runs in the background"""
    bl_idname = "scail2.auto_reference_mask"
    bl_label = "Auto Mask"
    bl_options = {'REGISTER'}

    @classmethod
    def poll(cls, context):
        if context.scene is None or get_settings(context.scene).reference_source == 'CAMERA':
            cls.poll_message_set("A camera render is masked by its alpha or the assigned identities")
            return False
        return True

    def execute(self, context):
        return _start(self, context, segmentation.reference_mask_job)


class SCAIL2_OT_matte_result(HistoryOperator, Operator):
    """Cut the characters of this result out (SAM 3): RGBA frames that its strip and camera plane then show """ \
        """over what lies behind. Runs in the background"""
    bl_idname = "scail2.matte_result"
    bl_label = "Matte"

    def execute(self, context):
        item = history_item(context, self.index)
        if item is None:
            self.report({'ERROR'}, "No such history entry")
            return {'CANCELLED'}
        generation.fill_entry_from_manifest(item)  # a farm entry whose frames came in since
        if not item.frames:
            self.report({'ERROR'}, "Job {:s} has no frames to cut out yet".format(item.job_id))
            return {'CANCELLED'}
        return _start(self, context, segmentation.matte_job, item)


class SCAIL2_OT_apply_segmentation(Operator):
    """Bring the result of a finished Auto Masks or Matte job into the scene"""
    bl_idname = "scail2.apply_segmentation"
    bl_label = "Use Segmentation"
    bl_options = {'REGISTER', 'UNDO', 'INTERNAL'}

    job: StringProperty(name="Job", description="The finished job (its key in this session's queue)")

    def execute(self, context):
        queue = session.get_queue(create=False)
        job = queue.get(self.job) if queue is not None else None
        if job is None or job.status != "done" or job.task == "generate":
            self.report({'ERROR'}, "No finished segmentation job {:s} in this session".format(self.job))
            return {'CANCELLED'}
        try:
            level, message = segmentation.apply(job, context)
        except (SegmentError, ResultError, sources.ExportError) as ex:
            self.report({'ERROR'}, str(ex))
            return {'CANCELLED'}
        job.meta["applied"] = (level, message)
        return {'FINISHED'}


classes = (
    SCAIL2_OT_auto_masks,
    SCAIL2_OT_refine_masks,
    SCAIL2_OT_auto_reference_mask,
    SCAIL2_OT_matte_result,
    SCAIL2_OT_apply_segmentation,
)
