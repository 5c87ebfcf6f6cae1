"""Child-process script for test_install.py: install, enable, use and disable the built extension.

Run as ``python install_script.py ZIP FAKE_PYTHON REPORT_JSON`` with
``BLENDER_USER_RESOURCES`` pointing at an empty folder (set before ``bpy`` is
imported, so Blender's user folders are isolated). Every step is recorded in
REPORT_JSON as ``{name: {"ok": bool, "detail": ...}}``; a failing step does not
stop the later ones, so the test shows every problem at once.
"""

import json
import os
import shutil
import sys
import traceback
import types

ZIP_PATH, FAKE_PYTHON, REPORT_PATH = sys.argv[1:4]
USER_DIR = os.environ["BLENDER_USER_RESOURCES"]

import bpy  # noqa: E402  (after the environment is set)
import addon_utils  # noqa: E402

REPO = "user_default"
PKG = "bl_ext.{:s}.scail2".format(REPO)
PREFIX = "SCAIL2_"

EXPECTED_CLASSES = {
    "SCAIL2_AddonPreferences",
    "SCAIL2_OT_check_backend",
    "SCAIL2_OT_import_result",
    "SCAIL2_FH_import_result",
    "SCAIL2_IdentityAssignment",
    "SCAIL2_SceneSources",
    "SCAIL2_OT_assign_identity",
    "SCAIL2_OT_remove_identity",
    "SCAIL2_OT_check_identities",
    "SCAIL2_OT_check_inputs",
    "SCAIL2_OT_clear_check_markers",
    "SCAIL2_OT_generate_anyway",
    "SCAIL2_OT_preview_mask",
    "SCAIL2_OT_export_driving",
    "SCAIL2_OT_export_masks",
    "SCAIL2_OT_export_reference",
    "SCAIL2_OT_open_output_folder",
    "SCAIL2_PT_sequencer_setup",
    "SCAIL2_PT_view3d_setup",
    "SCAIL2_JobHistoryItem",
    "SCAIL2_OT_cancel_input_render",
    "SCAIL2_OT_cancel_job",
    "SCAIL2_OT_cancel_setup_backend",
    "SCAIL2_OT_cancel_worker_job",
    "SCAIL2_OT_check_weights",
    "SCAIL2_OT_cancel_get_weights",
    "SCAIL2_OT_get_weights",
    "SCAIL2_OT_show_weights_plan",
    "SCAIL2_OT_export_all_inputs",
    "SCAIL2_OT_generate",
    "SCAIL2_OT_generate_anyway",
    "SCAIL2_OT_history_import",
    "SCAIL2_OT_history_redo",
    "SCAIL2_OT_history_remove",
    "SCAIL2_OT_job_report",
    "SCAIL2_OT_list_worker_jobs",
    "SCAIL2_OT_resume_job",
    "SCAIL2_OT_send_to_farm",
    "SCAIL2_OT_setup_backend",
    "SCAIL2_OT_stop_worker",
    "SCAIL2_OT_show_worker_certificate",
    "SCAIL2_OT_trust_worker_certificate",
    "SCAIL2_OT_auto_masks",
    "SCAIL2_OT_refine_masks",
    "SCAIL2_OT_auto_reference_mask",
    "SCAIL2_OT_matte_result",
    "SCAIL2_OT_apply_segmentation",
    "SCAIL2_PT_sequencer_generate",
    "SCAIL2_PT_sequencer_history",
    "SCAIL2_PT_sequencer_inputs",
    "SCAIL2_PT_sequencer_queue",
    "SCAIL2_PT_view3d_generate",
    "SCAIL2_PT_view3d_history",
    "SCAIL2_PT_view3d_inputs",
    "SCAIL2_PT_view3d_queue",
    "SCAIL2_SceneJob",
    "SCAIL2_UL_history",
    "SCAIL2_UL_identities",
    "SCAIL2_OT_compare",
    "SCAIL2_OT_compare_end",
    "SCAIL2_OT_compare_toggle",
    "SCAIL2_OT_export_review",
    "SCAIL2_OT_take_add_note",
    "SCAIL2_OT_take_approve",
    "SCAIL2_OT_take_jump_flag",
    "SCAIL2_OT_take_refresh",
    "SCAIL2_OT_take_show_notes",
    "SCAIL2_OT_take_use_settings",
    "SCAIL2_OT_wedge",
    "SCAIL2_PT_sequencer_review",
    "SCAIL2_PT_sequencer_wedge",
    "SCAIL2_PT_view3d_review",
    "SCAIL2_PT_view3d_wedge",
    "SCAIL2_TakeNote",
    "SCAIL2_ExtraView",
    "SCAIL2_ExtraViews",
    "SCAIL2_OT_add_extra_view",
    "SCAIL2_OT_add_extra_view_files",
    "SCAIL2_OT_export_extra_views",
    "SCAIL2_OT_move_extra_view",
    "SCAIL2_OT_remove_extra_view",
    "SCAIL2_OT_render_turnaround",
    "SCAIL2_PT_sequencer_extra_views",
    "SCAIL2_PT_view3d_extra_views",
    "SCAIL2_UL_extra_views",
}

report = {
    "blender_version": bpy.app.version_string,
}


def step(fn):
    """Run ``fn`` now and record its outcome under its name."""
    try:
        detail = fn()
        report[fn.__name__] = {"ok": True, "detail": detail}
    except BaseException:
        report[fn.__name__] = {"ok": False, "detail": traceback.format_exc()}
    return fn


def is_inside(path, folder):
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return os.path.commonpath([path, folder]) == folder


def scail2_types():
    return sorted(name for name in dir(bpy.types) if name.startswith(PREFIX))


def handler_snapshot():
    snapshot = {}
    for name in dir(bpy.app.handlers):
        value = getattr(bpy.app.handlers, name)
        if isinstance(value, list):
            snapshot[name] = [getattr(fn, "__module__", None) or repr(fn) for fn in value]
    return snapshot


def addon_functions():
    """Every function defined in the add-on's modules (also methods), to ask ``bpy.app.timers`` about."""
    found = []
    for mod_name, module in list(sys.modules.items()):
        if not (mod_name == PKG or mod_name.startswith(PKG + ".")) or module is None:
            continue
        for value in vars(module).values():
            candidates = [value]
            if isinstance(value, type) and value.__module__ == mod_name:
                candidates = [getattr(v, "__func__", v) for v in vars(value).values()]
            for obj in candidates:
                if isinstance(obj, types.FunctionType) and obj.__module__ == mod_name:
                    found.append(obj)
    return found


def addon_classes():
    """Every Blender class (operator, panel, preferences...) defined in the add-on's modules."""
    found = {}
    for mod_name, module in list(sys.modules.items()):
        if not (mod_name == PKG or mod_name.startswith(PKG + ".")) or module is None:
            continue
        for value in vars(module).values():
            if (
                    isinstance(value, type) and
                    issubclass(value, bpy.types.bpy_struct) and
                    value.__module__ == mod_name
            ):
                found[value.__name__] = value
    return found


def addon_module(suffix):
    return sys.modules[PKG + suffix]


def prefs():
    return bpy.context.preferences.addons[PKG].preferences


# --- A stand-in for UILayout, checking every call against Blender's own RNA definitions (script_common).

from script_common import LayoutStub, draw_preferences_of  # noqa: E402


class ContextStub:
    """``bpy.context`` with some members replaced."""

    def __init__(self, **members):
        self.__dict__.update(members)

    def __getattr__(self, name):
        return getattr(bpy.context, name)


def draw_panel(panel_name, context):
    log = []
    panel_cls = getattr(bpy.types, panel_name)
    panel_cls.draw(types.SimpleNamespace(layout=LayoutStub(log)), context)
    return log


def draw_preferences(context):
    return draw_preferences_of(prefs(), context)


def texts(log):
    return [entry[1] for entry in log if entry[0] == "label"]


# --- The steps.

baseline_handlers = handler_snapshot()
baseline_types = scail2_types()


@step
def install():
    assert not baseline_types, baseline_types
    result = bpy.ops.extensions.package_install_files(
        filepath=ZIP_PATH, repo=REPO, enable_on_install=True,
    )
    assert result == {'FINISHED'}, result
    assert PKG in bpy.context.preferences.addons, "not enabled"
    installed = os.path.join(USER_DIR, "extensions", REPO, "scail2")
    assert os.path.isfile(os.path.join(installed, "__init__.py")), os.listdir(USER_DIR)
    assert is_inside(sys.modules[PKG].__file__, installed), sys.modules[PKG].__file__
    assert addon_utils.check(PKG) == (True, True)
    return installed


@step
def registered():
    classes = addon_classes()
    not_registered = sorted(name for name, cls in classes.items() if not cls.is_registered)
    assert not not_registered, not_registered
    assert type(prefs()).__name__ == "SCAIL2_AddonPreferences"
    return {"classes": sorted(classes), "types": scail2_types()}


@step
def panels():
    details = {}
    for name in ("SCAIL2_PT_sequencer_setup", "SCAIL2_PT_view3d_setup"):
        cls = getattr(bpy.types, name)
        details[name] = [cls.bl_space_type, cls.bl_region_type, cls.bl_category]
    return details


@step
def preferences_defaults():
    p = prefs()
    assert type(p).bl_idname == PKG
    return {
        "python_path": p.python_path,
        "weights_dir": p.weights_dir,
        "output_dir": p.output_dir,
        "device": p.device,
        "memory_mode": p.memory_mode,
        "devices": [i.identifier for i in p.bl_rna.properties["device"].enum_items],
        "memory_modes": [i.identifier for i in p.bl_rna.properties["memory_mode"].enum_items],
        "compile_model": p.compile_model,
        "gpu_args": {
            f"{mode} compile={compiled}": addon_module(".runtime.session").gpu_args(
                types.SimpleNamespace(memory_mode=mode, compile_model=compiled))
            for mode in ("FULL_BF16", "FP8_STORAGE", "FP8_COMPUTE", "GROUP_OFFLOAD") for compiled in (False, True)
        },
        "farm_args": addon_module(".runtime.farm").farm_gpu_args(["--offload", "group", "--compute", "fp8",
                                                                  "--compile"]),
    }


@step
def first_run_hints():
    """The preferences of a fresh install on this machine (no NVIDIA driver), then set up for the CPU."""
    p = prefs()
    context = ContextStub(sequencer_scene=bpy.context.scene, region=types.SimpleNamespace(width=400))
    fresh = texts(draw_preferences(context))
    weights, device = p.weights_dir, p.device
    p.device = 'CUDA'  # chosen by hand
    cuda_chosen = texts(draw_preferences(context))
    p.weights_dir, p.device = USER_DIR, 'CPU'
    set_up = texts(draw_preferences(context))
    p.weights_dir, p.device = weights, device
    return {"fresh": fresh, "cuda_chosen": cuda_chosen, "set_up": set_up,
            "nvidia_smi": shutil.which("nvidia-smi") is not None}


@step
def data_dir():
    path = bpy.utils.extension_path_user(PKG)
    assert os.path.isdir(path), path + " was not created"
    assert is_inside(path, USER_DIR), path
    prefs_mod = addon_module(".preferences")
    assert prefs_mod.data_dir() == path
    output = prefs_mod.effective_output_dir(prefs())
    assert output == os.path.join(path, "output"), output
    assert not is_inside(path, report["install"]["detail"]), "data folder inside the code folder"
    return path


@step
def output_dir_setting():
    p = prefs()
    prefs_mod = addon_module(".preferences")
    chosen = os.path.join(USER_DIR, "renders")
    p.output_dir = chosen
    try:
        assert prefs_mod.effective_output_dir(p) == chosen
    finally:
        p.output_dir = ""


@step
def check_backend_poll_without_python():
    prefs().python_path = ""
    assert not bpy.ops.scail2.check_backend.poll()
    assert bpy.ops.scail2.open_output_folder.poll()


@step
def check_backend_ok():
    prefs().python_path = FAKE_PYTHON
    assert bpy.ops.scail2.check_backend.poll()
    result = bpy.ops.scail2.check_backend()
    assert result == {'FINISHED'}, result
    last = addon_module(".runtime.setup").last_check(FAKE_PYTHON)
    assert last is not None and last.ok, last
    with open(FAKE_PYTHON + ".calls", encoding="utf-8") as fh:
        args, cwd = fh.read().splitlines()[:2]
    assert args == "-m backend --version", args
    assert os.path.realpath(cwd) == os.path.realpath(report["install"]["detail"]), cwd
    return last.message


@step
def draw_after_check():
    # A wide sidebar, so the check result stays on one line.
    context = ContextStub(sequencer_scene=bpy.context.scene, region=types.SimpleNamespace(width=2000))
    seq = draw_panel("SCAIL2_PT_sequencer_setup", context)
    v3d = draw_panel("SCAIL2_PT_view3d_setup", context)
    pref = draw_preferences(context)
    # The sequencer panel adds the scene line, the rest is shared.
    assert seq[3:] == v3d, (seq, v3d)
    assert bpy.context.scene.name in texts(seq)
    assert FAKE_PYTHON in texts(v3d)
    operators = [entry[3][0] for entry in v3d if entry[0] == "operator"]
    assert "scail2.check_backend" in operators and "scail2.open_output_folder" in operators
    return {"sequencer": texts(seq), "view3d": texts(v3d), "preferences": texts(pref)}


@step
def draw_sequencer_real_context():
    # No stand-in for the sequencer scene: 5.0+ asks the workspace (none in background mode).
    texts_ = texts(draw_panel("SCAIL2_PT_sequencer_setup", ContextStub(region=None)))
    scene = addon_module(".compat").sequencer_scene(bpy.context)
    return {"scene": None if scene is None else scene.name, "texts": texts_[:2]}


@step
def check_backend_missing():
    missing = os.path.join(USER_DIR, "no-such-python")
    prefs().python_path = missing
    try:
        bpy.ops.scail2.check_backend()
    except RuntimeError as ex:
        message = str(ex)
    else:
        raise AssertionError("no error reported")
    assert "not found" in message and missing in message, message
    draw = draw_panel("SCAIL2_PT_view3d_setup", ContextStub(region=None))
    return {"error": message, "panel": texts(draw)}


@step
def draw_job_panels():
    """The job panels and the preferences, drawn through the checking stand-in, with every setting shown."""
    scene = bpy.context.scene
    src, job = scene.scail2_sources, scene.scail2_job
    context = ContextStub(sequencer_scene=scene, region=types.SimpleNamespace(width=400))
    drawn = {}
    for name in sorted(n for n in dir(bpy.types) if n.startswith("SCAIL2_PT_") and not n.endswith("_setup")):
        drawn[name] = texts(draw_panel(name, context))
    operators = set()
    # Every branch: each input source, the plane settings, the remote worker.
    for driving, masks, reference in (('CAMERA', 'IDENTITIES', 'CAMERA'), ('SEQUENCER', 'MASK_STRIP', 'IMAGE'),
                                      ('STRIP', 'FILE', 'STRIP')):
        src.driving_source, src.mask_source, src.reference_source = driving, masks, reference
        job.form = 'BOTH'
        for name in ("SCAIL2_PT_view3d_inputs", "SCAIL2_PT_view3d_generate"):
            operators.update(entry[3][0] for entry in draw_panel(name, context) if entry[0] == "operator")
    p = prefs()
    p.worker_location = 'REMOTE'
    operators.update(entry[3][0] for entry in draw_preferences(context) if entry[0] == "operator")
    p.worker_location = 'LOCAL'
    drawn["operators"] = sorted(operators)
    return drawn


@step
def preset_values():
    """What the Generate panel says of steps, guidance, shift and the output size, as the artist changes them."""
    scene = bpy.context.scene
    job = scene.scail2_job
    context = ContextStub(sequencer_scene=scene, region=types.SimpleNamespace(width=400))
    job.use_custom_sampling, job.preset, job.resolution, job.width, job.height = False, 'quality', '512p', 0, 0
    scene.scail2_sources.reference_source = 'CAMERA'
    scene.render.resolution_x, scene.render.resolution_y = 1080, 1920
    shown = {"quality 512p": texts(draw_panel("SCAIL2_PT_view3d_generate", context))}
    job.resolution = '704p'
    shown["quality 704p"] = texts(draw_panel("SCAIL2_PT_view3d_generate", context))
    job.preset, job.width, job.height = 'fast', 256, 128
    shown["fast 256x128"] = texts(draw_panel("SCAIL2_PT_view3d_generate", context))
    job.preset = 'quality'
    job.use_custom_sampling = True
    shown["overridden"] = [job.steps, round(job.guidance, 3), round(job.shift, 3)]
    job.use_custom_sampling, job.width, job.height, job.resolution = False, 0, 0, '512p'
    return shown


@step
def disable():
    functions = addon_functions()
    assert functions, "found no add-on functions to check timers with"
    classes = addon_classes()
    prefs().python_path = ""
    bpy.ops.preferences.addon_disable(module=PKG)
    assert PKG not in bpy.context.preferences.addons
    leftover = scail2_types() + sorted(name for name, cls in classes.items() if cls.is_registered)
    assert not leftover, leftover
    assert handler_snapshot() == baseline_handlers, "handlers left behind"
    timers = [fn.__qualname__ for fn in functions if bpy.app.timers.is_registered(fn)]
    assert not timers, timers
    return len(functions)


@step
def reenable_and_disable():
    # Change a sub-module and the add-on's time stamp on disk, as when developing:
    # enabling again reloads the add-on, which must reload its sub-modules too.
    installed = report["install"]["detail"]
    with open(os.path.join(installed, "core", "checks.py"), "a", encoding="utf-8") as fh:
        fh.write("\nRELOADED_BY_TEST = True\n")
    init = os.path.join(installed, "__init__.py")
    stamp = os.path.getmtime(init) + 10
    os.utime(init, (stamp, stamp))

    bpy.ops.preferences.addon_enable(module=PKG)
    assert getattr(addon_module(".core.checks"), "RELOADED_BY_TEST", False), "sub-module not reloaded"
    classes = addon_classes()
    assert set(classes) == EXPECTED_CLASSES, sorted(classes)
    assert all(cls.is_registered for cls in classes.values())
    bpy.ops.preferences.addon_disable(module=PKG)
    leftover = scail2_types() + sorted(name for name, cls in classes.items() if cls.is_registered)
    assert not leftover, leftover
    assert handler_snapshot() == baseline_handlers, "handlers left behind"


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1)
