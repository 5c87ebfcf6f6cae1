# SPDX-License-Identifier: GPL-3.0-or-later
"""SCAIL-2 Character Animation: animate a reference character with SCAIL-2 from Blender.

Blender side of the extension. It uses only the Python standard library and
``bpy``; the model itself runs in a separate Python (the ``backend`` package,
started as a subprocess with its own environment).
"""

if "bpy" in locals():
    # "Reload Scripts": reload the sub-modules too, dependencies first.
    import importlib

    compat = importlib.reload(compat)
    preferences = importlib.reload(preferences)
    results = importlib.reload(results)
    operators.backend_check = importlib.reload(operators.backend_check)
    operators.backend = importlib.reload(operators.backend)
    operators.import_result = importlib.reload(operators.import_result)
    for _name in ("clip", "pixels", "render", "settings", "sequencer", "footage", "masks", "reference"):
        importlib.reload(getattr(sources, _name))
    sources = importlib.reload(sources)
    operators.export_inputs = importlib.reload(operators.export_inputs)
    jobs = importlib.reload(jobs)
    backend_setup = importlib.reload(backend_setup)
    job_settings = importlib.reload(job_settings)
    job_runtime = importlib.reload(job_runtime)
    segment_jobs = importlib.reload(segment_jobs)
    segment_runtime = importlib.reload(segment_runtime)
    operators.generate = importlib.reload(operators.generate)
    operators.setup_backend = importlib.reload(operators.setup_backend)
    operators.segment = importlib.reload(operators.segment)
    operators = importlib.reload(operators)
    panels.setup = importlib.reload(panels.setup)
    panels.jobs = importlib.reload(panels.jobs)
    panels = importlib.reload(panels)
    del importlib

import bpy

from . import (
    backend_setup,
    compat,
    job_settings,
    jobs,
    operators,
    panels,
    preferences,
    results,
    sources,
)
from . import job_runtime
from . import segment_jobs
from . import segment_runtime

# Registered in this order, unregistered in reverse.
_classes = (
    *preferences.classes,
    *job_settings.classes,
    *operators.classes,
    *panels.classes,
)


def register():
    registered = []
    try:
        for cls in _classes:
            bpy.utils.register_class(cls)
            registered.append(cls)
    except Exception:
        # Leave nothing half-registered behind.
        for cls in reversed(registered):
            bpy.utils.unregister_class(cls)
        raise
    # Create the user data folder up front, so it exists whatever runs first.
    preferences.data_dir()
    job_runtime.register()


def unregister():
    # Jobs first: the timer and the worker stop before the classes they use go.
    job_runtime.unregister()
    operators.setup_backend.forget()
    panels.jobs.forget_previews()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
    operators.backend.forget_checks()
