# SPDX-License-Identifier: GPL-3.0-or-later
"""A wedge: several takes of the current shot in one click, each a normal job varying one setting.

The job is built as Generate builds it (``runtime.generation.build_job``); each take is that job with
one change (``core.takes.wedge_variations``): seeds, reference stills, guidance, solver or LoRA strength.
Each is queued as its own job, so it can be cancelled or resumed like any other.
"""

__all__ = (
    "queue_wedge",
)

import dataclasses
import os

from .. import protocol
from ..core import takes
from ..props import job_settings
from . import follow, generation
from .session import GenerateError


def _describe(change):
    if "seed" in change:
        return "seed {:d}".format(change["seed"])
    if "reference" in change:
        return os.path.basename(change["reference"])
    if "guidance" in change:
        return "guidance {:g}".format(change["guidance"])
    if "sampler" in change:
        return change["sampler"]
    return "LoRA {:g}".format(change["loras"][0]["strength"])


def queue_wedge(context, scene=None):
    """Queue the wedge the Generate panel sets up; ``(last job, level, message)`` as ``follow.run_job``."""
    scene = scene or context.scene
    settings = job_settings.get_job_settings(scene)
    request = generation.build_job(context, scene)
    try:
        changes = takes.wedge_variations(settings.wedge_kind, settings.wedge_count, settings.wedge_values,
                                         dataclasses.asdict(request.spec))
    except ValueError as ex:
        raise GenerateError(str(ex)) from None
    specs = []
    for change in changes:
        try:
            specs.append((dataclasses.replace(request.spec, **change).validate(), change))
        except (protocol.ProtocolError, TypeError) as ex:
            raise GenerateError(str(ex)) from None
    job, outcomes = None, []
    for number, (spec, change) in enumerate(specs, 1):
        label = request.meta.get("label", "")
        if "seed" not in change:  # the seed shows in every history row anyway
            label = "{:s} \u00b7 {:s}".format(label, _describe(change)).strip(" \u00b7")
        meta = dict(request.meta, label=label, wedge={"take": number, "of": len(specs), "vary": settings.wedge_kind})
        job, level, message = follow.run_job(context, spec, meta)
        outcomes.append(level)
        if level == 'ERROR':
            return job, level, message
    level = 'WARNING' if 'WARNING' in outcomes else 'INFO'
    return job, level, "SCAIL-2 wedge: {:d} takes of the shot ({:s})".format(
        len(specs), ", ".join(_describe(change) for _spec, change in specs))[:200]
