# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the SCAIL-2 add-on, one file per feature.

Operators stay thin: properties, ``poll`` and reports. The work is done in
``runtime`` (jobs, imports, setup state), ``sources`` (exports) and ``core``
(plain logic, no ``bpy``), which tests drive directly.
"""

__all__ = (
    "classes",
)

from . import extra_views
from . import farm
from . import import_result
from . import inputs
from . import jobs
from . import remote
from . import review
from . import segmentation
from . import setup
from . import weights

classes = (
    *setup.classes,
    *weights.classes,
    *inputs.classes,
    *extra_views.classes,
    *import_result.classes,
    *jobs.classes,
    *review.classes,
    *farm.classes,
    *segmentation.classes,
    *remote.classes,
)
