# SPDX-License-Identifier: GPL-3.0-or-later
"""What the artist sees: the add-on's preferences and the sidebar panels of the "SCAIL" tab. Drawing only."""

__all__ = (
    "classes",
)

from . import jobs
from . import preferences
from . import setup

classes = (
    *preferences.classes,
    *setup.classes,
    *jobs.classes,
)
