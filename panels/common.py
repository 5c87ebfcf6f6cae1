# SPDX-License-Identifier: GPL-3.0-or-later
"""Drawing helpers the panels share."""

__all__ = (
    "STATUS_ICONS",
    "draw_job_state",
    "forget_previews",
    "label_wrapped",
    "latest_job",
    "thumbnail_icon",
)

import os
import textwrap

import bpy

from ..runtime import follow, session

# Warnings of a job shown in its panel (the manifest keeps them all).
MAX_WARNINGS = 3
# Thumbnails of the mask preview and the history (a preview collection, not Blender data).
_previews = None

# Rough width of one character of interface text, in pixels at scale 1.0.
_CHAR_WIDTH_PX = 7.0


def label_wrapped(layout, context, text, icon):
    """Draw ``text`` over as many lines as the sidebar's width needs."""
    region = context.region
    width = region.width if region is not None else 300
    scale = context.preferences.system.ui_scale or 1.0
    chars = max(16, int(width / (_CHAR_WIDTH_PX * scale)) - 4)
    col = layout.column(align=True)
    for i, line in enumerate(textwrap.wrap(text, chars) or [""]):
        col.label(text=line, icon=icon if i == 0 else 'BLANK1', translate=False)


def thumbnail_icon(path):
    global _previews
    if not path or not os.path.isfile(path):
        return 0
    if _previews is None:
        import bpy.utils.previews

        _previews = bpy.utils.previews.new()
    key = "{:s}:{:f}".format(path, os.path.getmtime(path))  # a re-rendered file gets a new preview
    item = _previews.get(key)
    if item is None:
        item = _previews.load(key, path, 'IMAGE')
    return item.icon_id


def forget_previews():
    """Free the thumbnails (on unregister)."""
    global _previews
    if _previews is not None:
        import bpy.utils.previews

        bpy.utils.previews.remove(_previews)
        _previews = None


# --------------------------------------------------------------------------------------------
# A job's state.

STATUS_ICONS = {
    "submitting": 'SORTTIME',
    "queued": 'SORTTIME',
    "running": 'RENDER_ANIMATION',
    "done": 'CHECKMARK',
    "failed": 'ERROR',
    "cancelled": 'CANCEL',
}


def latest_job(scene, tasks=("generate",), kind=None):
    """The scene's running job of ``tasks`` (of that segmentation ``kind``), else the newest one."""
    jobs = [job for job in session.scene_jobs(scene, tasks)
            if kind is None or job.meta.get("segment", {}).get("kind") == kind]
    active = [job for job in jobs if job.active]
    return active[-1] if active else (jobs[-1] if jobs else None)


def draw_job_state(layout, context, job):
    """Progress, ETA, preview and error of one job."""
    col = layout.column(align=True)
    icon = STATUS_ICONS.get(job.status, 'INFO')
    if job.status == "failed" and job.error is not None:
        label_wrapped(col, context, job.error.message, 'ERROR')
        if job.error.hint:
            label_wrapped(col, context, job.error.hint, 'INFO')
        if job.resumable and "resumed_as" not in job.meta:
            col.operator("scail2.resume_job", icon='PLAY').job = job.key
        return
    label_wrapped(col, context, job.phase_text(), icon)
    if job.active:
        text = "About {:s} left".format(job.eta_text()) if job.eta_s is not None else "Working out the time left"
        col.progress(factor=job.progress(), type='BAR', text=text)
    if job.noise_only:
        col.label(text="Test model: the frames are noise", icon='INFO')
    for warning in job.warnings[:MAX_WARNINGS]:
        label_wrapped(col, context, warning, 'ERROR')
    image = bpy.data.images.get(follow.PREVIEW_IMAGE)
    if job.preview and image is not None and image.preview is not None and image.preview.icon_id:
        layout.template_icon(icon_value=image.preview.icon_id, scale=8.0)
