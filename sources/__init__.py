# SPDX-License-Identifier: GPL-3.0-or-later
"""A job's inputs from Blender: driving footage, reference stills and colour masks.

Every export writes files (or finds them) and returns plain data saying where
they are and which scene frames they stand for:

* :mod:`.footage`: driving footage from a sequencer strip (read straight from
  its movie or images when Blender shows them unaltered, else rendered through
  the sequencer), from the sequencer's output, or from the 3D scene through a
  camera;
* :mod:`.masks`: colour masks rendered flat from objects and collections
  assigned to identities 1-6, from mask strips, or a mask file made elsewhere;
  and the check that every identity of the driving mask has a character;
* :mod:`.reference`: the reference still from a file, an Image, a strip's
  frame or a render through a camera (alpha kept);
* :mod:`.extra_views`: the Extra Views list, each view from the reference's
  sources or a turnaround around a character object (:mod:`.turnaround`),
  always with a mask file;
* ``core.inputs``: :class:`ExportedClip`, :class:`ExportedStill` and the
  ``inputs.json`` record a job is built from (standard library only); what
  the artist chose is ``props.input_settings`` (``Scene.scail2_sources``).

Nothing here changes the user's scene: renders happen in a temporary copy of
it, and the few shared values an export must change (object colours, mask
layer visibility) are put back.
"""

__all__ = (
    "ExportError",
    "ExportedClip",
    "ExportedStill",
    "NO_MASK",
    "attach_reference_mask",
    "bake_reasons",
    "check_identities",
    "export_mask_file",
    "export_mask_strip",
    "export_sequencer_range",
    "export_strip",
    "job_fields",
    "load_inputs",
    "preview_mask_strip",
    "reference_from_file",
    "reference_from_image",
    "reference_from_strip",
    "render_camera_clip",
    "render_driving_masks",
    "render_reference",
    "render_reference_mask",
    "save_inputs",
)

from ..core.inputs import ExportError, ExportedClip, ExportedStill, job_fields, load_inputs, save_inputs
from .footage import bake_reasons, export_sequencer_range, export_strip, render_camera_clip
from .masks import (
    NO_MASK,
    check_identities,
    export_mask_file,
    export_mask_strip,
    preview_mask_strip,
    render_driving_masks,
    render_reference_mask,
)
from .reference import (
    attach_reference_mask,
    reference_from_file,
    reference_from_image,
    reference_from_strip,
    render_reference,
)
