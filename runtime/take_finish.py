# SPDX-License-Identifier: GPL-3.0-or-later
"""A finished generation becomes a take: its history entry, its review numbered within its shot, its place.

The take is imported in the place of the take its shot shows (``runtime.layout``): one channel per shot,
never a stack of strips hiding each other. While the shot shows an approved take, a new take stays in the
history (on disk, ready to Compare or Approve) and the layout is left alone. When the seed is not locked
the Seed field then shows the seed the take used, so locking it repeats that take.
"""

__all__ = (
    "finish_take",
)

import os

import bpy

from ..core.util import operator_error_line
from ..props import job_settings
from . import layout, review
from .generation import add_history_entry
from .session import job_scenes


def _undo_push(message):
    try:
        bpy.ops.ed.undo_push(message=message)
    except RuntimeError:
        pass  # no window to push to (background): nothing to undo there either


def finish_take(job, interactive):
    """A done generation: history entry, review, layout. Returns ``(level, message)``."""
    scene, seq_scene = job_scenes(job.meta)
    job_id = os.path.basename(os.path.normpath(job.job_dir)) or job.id
    if scene is None:
        return 'WARNING', ("SCAIL-2 job {:s} finished, but its scene is no longer open; "
                           "import {:s} with Import Result").format(job_id, job.manifest)
    settings = job_settings.get_job_settings(scene)
    item = add_history_entry(job, scene)
    problem = review.register_take(scene, item, derived_from=job.meta.get("derived_from", ""))
    if not settings.use_seed_lock and item.seed <= job_settings.MAX_SEED:
        settings.seed = item.seed
    name = "v{:03d} ({:s})".format(item.version, item.name)
    shown = layout.layout_take(scene, seq_scene, item.shot)
    if shown is not None and shown.take_status == 'APPROVED':
        item.status = 'DONE'
        item.note = "v{:03d} is approved for this shot; Compare or Approve to see this take".format(shown.version)
        return 'INFO', "SCAIL-2 take {:s} finished ({:d} frames); the approved v{:03d} stays in the layout".format(
            name, item.frames, shown.version)
    try:
        layout.place_take(scene, seq_scene, item, undo=interactive and shown is None)
    except RuntimeError as ex:
        item.status = 'DONE'
        item.note = operator_error_line(ex)
        return 'ERROR', "SCAIL-2 take {:s} finished but was not imported: {:s}".format(name, item.note)
    if interactive and shown is not None:
        _undo_push("SCAIL-2 take " + name)
    item.status = 'IMPORTED'
    text = "SCAIL-2 take {:s} finished and was imported ({:d} frames)".format(name, item.frames)
    if shown is not None:
        text += ", in the place of v{:03d}".format(shown.version)
    return ('WARNING', text + "; " + problem) if problem else ('INFO', text)
