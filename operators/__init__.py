# SPDX-License-Identifier: GPL-3.0-or-later
"""Operators of the SCAIL-2 add-on.

Operators stay thin: the work is done by plain functions in modules such as
``backend_check`` and the top-level ``results`` (standard library only), which
tests drive directly.
"""

__all__ = (
    "classes",
)

from . import backend
from . import export_inputs
from . import import_result
from . import generate
from . import setup_backend
from . import segment

classes = (
    *backend.classes,
    *export_inputs.classes,
    *import_result.classes,
    *generate.classes,
    *setup_backend.classes,
    *segment.classes,
)
