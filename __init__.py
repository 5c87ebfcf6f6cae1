# SPDX-License-Identifier: GPL-3.0-or-later
"""SCAIL-2 Character Animation: animate a reference character with SCAIL-2 from Blender.

Blender side of the extension. It uses only the Python standard library and
``bpy``; the model itself runs in a separate Python (the ``backend`` package,
started as a subprocess with its own environment). The layers, each importing
only those before it:

* ``protocol``, ``compat``, ``preferences``: shared settings, Blender version
  differences, the add-on's folders;
* ``core/``: plain logic, no ``bpy`` (job queue, worker client, results maths);
* ``props/``: what is stored on the scene;
* ``sources/``: exports of a job's inputs from Blender;
* ``runtime/``: jobs, imports and setup inside Blender;
* ``operators/`` and ``panels/``: thin operators, drawing only.
"""

# Every sub-module, dependencies first: "Reload Scripts" reloads them in this order
# (tests/blender/test_reload_list.py checks that each is listed, after what it imports).
_modules = (
    "protocol.records",
    "protocol.errors",
    "protocol.events",
    "protocol.checks",
    "protocol.downloads",
    "protocol.json_files",
    "protocol.messages",
    "protocol.review",
    "protocol.manifest",
    "protocol.seeds",
    "protocol.state",
    "protocol.segmentation",
    "protocol.wire",
    "protocol.direct_io",
    "protocol.progress_text",
    "protocol",
    "compat",
    "preferences",
    "core",
    "core.util",
    "core.worker_tls",
    "core.file_digests",
    "core.downloads",
    "core.uploads",
    "core.transfer",
    "core.inputs",
    "core.pixels",
    "core.timing",
    "core.placement",
    "core.results",
    "core.input_checks",
    "core.job",
    "core.transports",
    "core.process_transport",
    "core.socket_transport",
    "core.worker_client",
    "core.connection",
    "core.queue_events",
    "core.queue",
    "core.segmentation",
    "core.setup",
    "core.checks",
    "core.weights_download",
    "props.import_options",
    "core.takes",
    "core.extra_views",
    "props.job_settings",
    "props.input_settings",
    "props.extra_views",
    "props",
    "sources.render",
    "sources.fingerprints",
    "sources.sequencer",
    "sources.footage",
    "sources.masks",
    "sources.reference",
    "sources.turnaround",
    "sources.extra_views",
    "sources",
    "sources.exports",
    "runtime",
    "runtime.session",
    "runtime.result_plan",
    "runtime.result_create",
    "runtime.generation",
    "runtime.review",
    "runtime.layout",
    "runtime.take_finish",
    "runtime.matte",
    "runtime.segmentation",
    "runtime.input_checks",
    "runtime.follow",
    "runtime.farm",
    "runtime.compare",
    "runtime.wedge",
    "runtime.review_export",
    "runtime.input_render",
    "runtime.turnaround",
    "runtime.setup",
    "runtime.weights",
    "operators.common",
    "operators.remote",
    "operators.setup",
    "operators.weights",
    "operators.inputs",
    "operators.extra_views",
    "operators.import_result",
    "operators.jobs",
    "operators.farm",
    "operators.review",
    "operators.segmentation",
    "operators",
    "panels.common",
    "panels.preferences",
    "panels.setup",
    "panels.inputs",
    "panels.extra_views",
    "panels.jobs",
    "panels.menus",
    "panels.review",
    "panels",
)

if "bpy" in locals():
    import importlib
    import sys

    for _name in _modules:
        _module = sys.modules.get(__name__ + "." + _name)
        if _module is not None:
            importlib.reload(_module)
    del importlib, sys, _name, _module

import bpy

# Blender 4.2 and newer read blender_manifest.toml and refuse releases below its minimum. Older ones
# install the zip as a legacy add-on: they read this, list the add-on with its minimum, and
# ``register`` says in one line what it needs instead of failing on code they cannot run.
# Literals only: Blender lists add-ons by reading bl_info with ast.literal_eval, without running the file.
bl_info = {
    "name": "SCAIL-2 Character Animation",
    "description": "Animate a reference character with SCAIL-2 (needs Blender 4.5 or newer)",
    "blender": (4, 5, 0),
    "version": (0, 1, 0),
    "location": "Sequencer and 3D Viewport > Sidebar > SCAIL",
    "category": "Animation",
}
MINIMUM_BLENDER = bl_info["blender"]
TOO_OLD = bpy.app.version < MINIMUM_BLENDER

if not TOO_OLD:
    from . import operators
    from . import panels
    from . import preferences
    from . import props
    from .runtime import follow
    from .runtime import input_render
    from .runtime import review
    from .runtime import review_export
    from .runtime import setup
    from .runtime import weights

# Registered in this order, unregistered in reverse.
_classes = () if TOO_OLD else (
    *props.classes,
    *operators.classes,
    *panels.classes,
)


def too_old_message(version_string):
    return "SCAIL-2 needs Blender {:s} or newer; this is Blender {:s}. Install Blender 4.5 LTS or newer".format(
        ".".join(map(str, MINIMUM_BLENDER[:2])), version_string)


def register():
    if TOO_OLD:
        raise RuntimeError(too_old_message(bpy.app.version_string))
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
    panels.menus.register()
    # Create the user data folder up front, so it exists whatever runs first.
    preferences.data_dir()
    _apply_machine_defaults()
    follow.register()
    review.register()


def _apply_machine_defaults():
    """A fresh install's settings follow what this machine has (no NVIDIA GPU: the CPU)."""
    try:
        prefs = preferences.get_preferences()
    except (KeyError, AttributeError):
        return  # enabled without a preferences entry (a script's addon_utils.enable without default_set)
    panels.preferences.apply_machine_defaults(prefs, setup.nvidia_driver_found())


def unregister():
    if TOO_OLD:
        return
    # Jobs first: the timers and the worker stop before the classes they use go.
    input_render.unregister()
    follow.unregister()
    weights.forget()
    review_export.unregister()
    review.unregister()
    setup.forget()
    panels.common.forget_previews()
    panels.inputs.forget()
    panels.jobs.forget()
    panels.menus.unregister()
    for cls in reversed(_classes):
        bpy.utils.unregister_class(cls)
