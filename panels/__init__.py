# SPDX-License-Identifier: GPL-3.0-or-later
"""What the artist sees: the add-on's preferences and the sidebar panels of the "SCAIL" tab. Drawing only."""

__all__ = (
    "classes",
)

from . import common  # noqa: F401  (unregister frees its thumbnails)
from . import inputs
from . import extra_views
from . import jobs
from . import menus  # noqa: F401  (registers its menu entries itself)
from . import preferences
from . import review
from . import setup

classes = (
    *preferences.classes,
    *setup.classes,
    *inputs.classes,
    *extra_views.classes,
    *jobs.classes,
    *review.classes,
)
