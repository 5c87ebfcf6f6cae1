# SPDX-License-Identifier: GPL-3.0-or-later
"""Turnaround: extra views rendered around a character object, from a timer.

One button puts a view per chosen angle in the Extra Views list (replacing the character's earlier
turnaround views) and renders them, with the identity masks rendered exactly as the driving masks
are, through ``runtime.input_render``: a view per tick, with the Generate panel's progress and
Cancel, so Blender stays usable. Each view renders in a temporary copy of the scene through a
temporary camera that is removed after it (``sources.turnaround``); the scene is left as it was.
In background mode the views render at once.
"""

__all__ = (
    "start_turnaround",
)

import math

from ..core.extra_views import EXTRA_VIEWS, MAX_EXTRA_VIEWS, view_identity_problem
from ..core.inputs import ExportError, load_inputs
from ..props.extra_views import get_extra_views, parse_angles
from ..props.input_settings import assigned_objects
from ..sources import exports
from ..sources.extra_views import add_view
from ..sources.render import drain
from . import input_render, session


def _turnaround_views(scene):
    """Put the turnaround's views in the Extra Views list, replacing the character's earlier ones."""
    extra = get_extra_views(scene)
    character = extra.turnaround_object
    if character is None:
        raise ExportError("Choose the character object to render views around")
    if character not in assigned_objects(scene)[0]:
        raise ExportError("Assign {:s} an identity first (Identities list): its views need its mask".format(
            character.name))
    angles = parse_angles(extra.turnaround_angles)
    earlier = [i for i, view in enumerate(extra.views) if view.source == 'TURNAROUND' and view.target == character]
    if len(extra.views) - len(earlier) + len(angles) > MAX_EXTRA_VIEWS:
        raise ExportError("A job takes at most {:d} extra views: remove some before adding {:d} more".format(
            MAX_EXTRA_VIEWS, len(angles)))
    take = 1 + max((view.take for view in extra.views), default=0)  # each press renders anew
    for index in reversed(earlier):
        extra.views.remove(index)
    for angle in angles:
        add_view(scene, source='TURNAROUND', target=character, angle=math.radians(angle),
                 engine=extra.turnaround_engine, take=take)
    return len(angles)


def _rendered(context):
    """``(None, level, message)`` once the views are rendered (what ``input_render`` reports)."""
    inputs = load_inputs(exports.inputs_folder(context, context.scene))
    count = len(inputs.get(EXTRA_VIEWS) or ())
    problem = view_identity_problem(inputs)
    if problem:
        return None, 'WARNING', problem
    return None, 'INFO', "Rendered the turnaround: {:d} extra view{:s} ready".format(count, "" if count == 1 else "s")


def start_turnaround(context):
    """Add and render the turnaround of the chosen character; ``(level, message)``. ExportError with one line."""
    count = _turnaround_views(context.scene)
    keys = [EXTRA_VIEWS]
    if session.synchronous():
        drain(exports.iter_export_missing(context, keys))
        return _rendered(context)[1:]
    _job, level, message = input_render.start(context, keys, then=_rendered)
    if level == 'INFO':
        message = "Rendering {:d} turnaround views of {:s}; Blender stays usable meanwhile".format(
            count, get_extra_views(context.scene).turnaround_object.name)
    return level, message
