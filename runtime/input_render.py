# SPDX-License-Identifier: GPL-3.0-or-later
"""A job's inputs rendered from a timer, a few frames per tick, so Blender stays responsive.

Rendering the driving footage, masks and reference from the 3D scene takes seconds to minutes; done
inside the Generate operator it froze Blender for all of it. Generate hands the exports to an
:class:`InputRender` instead: the timer runs its steps (``sources.exports.iter_export_missing``) for
about :data:`STEP_BUDGET_S` at a time, the Generate panel shows it as the job's first phase with a
progress bar and Cancel, and when the last input is written the job is built and queued as if
Generate had been pressed then. In background mode Generate still exports in one go.

Cancel, undo, opening another file or disabling the add-on close the steps: the export's temporary
scene is removed at once and the input being rendered is dropped from ``inputs.json``. Edits to the
scene made while it renders may show in the frames not yet rendered.
"""

__all__ = (
    "InputRender",
    "active",
    "cancel",
    "start",
    "unregister",
)

import time

import bpy

from .. import compat
from ..core.inputs import ExportError
from ..core.util import one_line
from ..sources import exports
from . import follow, session

STEP_BUDGET_S = 0.1  # rendering per tick; Blender handles events and redraws between ticks
TICK_S = 0.01

_active = None  # the InputRender running now (one at a time), or None


class InputRender:
    """The exports of one Generate, stepped by the timer; ``then(context)`` queues the job at their end."""

    def __init__(self, scene, seq_scene, keys, then):
        self.scene = {"scene": scene.name, "scene_pointer": scene.as_pointer(),
                      "seq_scene": seq_scene.name, "seq_scene_pointer": seq_scene.as_pointer()}
        self.names = exports.rendered_input_names(bpy.context, keys) or ["inputs"]
        self.steps = exports.iter_export_missing(bpy.context, keys)
        self.then = then
        self.what, self.done, self.total = self.names[0], 0, 0
        self.started = time.monotonic()

    @property
    def scene_name(self):
        return self.scene["scene"]

    def text(self):
        """What the panel and the status bar say: which input, how far."""
        count = " {:d}/{:d}".format(self.done, self.total) if self.total > 1 else ""
        return "Rendering the {:s}{:s}".format(self.what, count)

    def factor(self):
        """How far the input being rendered is, 0-1."""
        return self.done / self.total if self.total else 0.0

    def advance(self, budget_s):
        """Run steps for about ``budget_s`` seconds; True when every input is written."""
        end = time.monotonic() + budget_s
        for self.what, self.done, self.total in self.steps:
            if time.monotonic() >= end:
                return False
        return True

    def close(self):
        try:
            self.steps.close()
        except (ReferenceError, RuntimeError):
            pass  # undo or a file load already removed the temporary scene


def active(scene=None):
    """The InputRender running now (for ``scene``, when given), or None."""
    if _active is not None and (scene is None or _active.scene_name == scene.name):
        return _active
    return None


def start(context, keys, then):
    """Start rendering the inputs ``keys`` (``exports.exports_needed``) of the context's scene; at their end
    ``then(context)`` queues the job and returns ``(job, level, message)``. Returns ``(None, level, message)``
    for the operator to report."""
    global _active
    if _active is not None:
        return None, 'ERROR', "Blender is still rendering the inputs of {:s}: wait for it or cancel it".format(
            _active.scene_name)
    scene = context.scene
    _active = InputRender(scene, compat.sequencer_scene(context) or scene, keys, then)
    if not bpy.app.timers.is_registered(_tick):
        bpy.app.timers.register(_tick, first_interval=TICK_S)
    _watch(True)
    follow.redraw_job_panels()
    return None, 'INFO', "Rendering the {:s} for the job; Blender stays usable meanwhile".format(
        ", ".join(_active.names))


def cancel(reason="Cancelled"):
    """Stop the input render (nothing is queued); ``(level, message)`` or None when none runs."""
    global _active
    render, _active = _active, None
    if render is None:
        return None
    render.close()
    _watch(False)
    follow.redraw_job_panels()
    return 'WARNING', "{:s}: the inputs were not all rendered and no job was queued".format(reason)


def _tick():
    """The timer: render for a while, then let Blender have its turn. Never raises."""
    global _active
    render = _active
    if render is None:
        return None
    scene, seq_scene = session.job_scenes(render.scene)
    if scene is None:
        follow.notify(*cancel("The scene was closed"))
        return None
    try:
        with bpy.context.temp_override(**session.scene_overrides(scene, seq_scene)):
            if not render.advance(STEP_BUDGET_S):
                follow.redraw_job_panels()
                return TICK_S
            _active = None
            _watch(False)
            _job, level, message = render.then(bpy.context)
    except (ExportError, session.GenerateError) as ex:
        level, message = 'ERROR', str(ex)
    except Exception as ex:  # a timer that raises is dropped by Blender silently: say it instead
        level, message = 'ERROR', "Rendering the inputs failed: " + one_line(str(ex) or type(ex).__name__)
    if _active is render:
        _active = None
        render.close()
        _watch(False)
    follow.redraw_job_panels()
    follow.notify(level, message)
    return None


@bpy.app.handlers.persistent
def _on_undo_or_load(*_args):
    if _active is not None:
        cancel("Undo or a file load stopped the input render")


_HANDLERS = (bpy.app.handlers.undo_pre, bpy.app.handlers.redo_pre, bpy.app.handlers.load_pre)


def _watch(on):
    for handlers in _HANDLERS:
        if on and _on_undo_or_load not in handlers:
            handlers.append(_on_undo_or_load)
        elif not on and _on_undo_or_load in handlers:
            handlers.remove(_on_undo_or_load)


def unregister():
    """Stop a running render and its timer (the add-on is disabled)."""
    cancel()
    if bpy.app.timers.is_registered(_tick):
        bpy.app.timers.unregister(_tick)
