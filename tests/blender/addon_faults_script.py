"""Child-process script for runtime/test_addon_faults.py: the add-on as a careful new user finds it (issue 30, 13-19).

Run as ``python addon_faults_script.py ZIP WORK_DIR REPORT_JSON`` with ``BLENDER_USER_RESOURCES`` pointing at an
empty folder and no ``nvidia-smi`` on PATH. WORK_DIR holds ``work.json`` (the jobs, the farm folder, the backend
Python written by the test). Installs and enables the built extension, then records every step in REPORT_JSON as
``{name: {"ok": bool, "detail": ...}}``; a failing step does not stop the later ones. The checks are in the test.
"""

import json
import os
import sys

ZIP_PATH, WORK_DIR, REPORT_PATH = sys.argv[1:4]

import bpy  # noqa: E402  (after the environment is set)

from script_common import PKG, REPO, module, report, show, step, window  # noqa: E402

with open(os.path.join(WORK_DIR, "work.json"), encoding="utf-8") as fh:
    WORK = json.load(fh)

ICONS = {i.identifier for i in bpy.types.UILayout.bl_rna.functions["operator"].parameters["icon"].enum_items}


def recorded(draw, self_attrs=None, context=None):
    """Run ``draw(self, context)`` against a recording layout: ``[(call, text or name, icon, {set attributes})]``.

    ``self_attrs``: the object ``self`` reads its attributes from (preferences, a panel's nothing)."""
    calls = []

    class Layout:
        def __init__(self, entry=None):
            object.__setattr__(self, "entry", entry)

        def __getattr__(self, attr):
            def call(*args, **kwargs):
                icon = kwargs.get("icon", 'NONE')
                if icon not in ICONS:
                    raise ValueError("no icon {!r} in this Blender".format(icon))
                entry = None
                if attr == "label":
                    entry = ["label", kwargs.get("text", ""), icon, {}]
                elif attr == "operator":
                    entry = ["operator", args[0], icon, {}]
                elif attr == "operator_menu_enum":
                    entry = ["menu_enum", "{:s}:{:s}".format(args[0], args[1]), icon, {}]
                elif attr in ("prop", "prop_search"):
                    entry = ["prop", args[1], icon, {}]
                if entry is not None:
                    calls.append(entry)
                return Layout(entry)
            return call

        def __setattr__(self, attr, value):
            if self.entry is not None:
                self.entry[3][attr] = value

    class Self:
        layout = Layout()

        def __getattr__(self, attr):
            return getattr(self_attrs, attr)

    draw(Self(), context or bpy.context)
    return calls


def labels(calls):
    return [text for kind, text, _icon, _set in calls if kind == "label"]


def prefs():
    return bpy.context.preferences.addons[PKG].preferences


def draw_preferences():
    return recorded(type(prefs()).draw, prefs())


def draw_panel(name):
    return recorded(getattr(bpy.types, name).draw)


@step
def install():
    result = bpy.ops.extensions.package_install_files(filepath=ZIP_PATH, repo=REPO, enable_on_install=True)
    assert result == {'FINISHED'}, result
    return {"device": prefs().device, "nvidia_smi": module(".runtime.setup").nvidia_driver_found()}


# --- 15. Defaults follow the machine.

@step
def defaults_without_nvidia_gpu():
    p = prefs()
    drawn = draw_preferences()
    p.python_path = WORK["backend_python"]
    p.output_dir = os.path.join(WORK_DIR, "output")
    p.model_source = 'TINY'
    setup_panel = labels(draw_panel("SCAIL2_PT_view3d_setup"))
    p.device = 'CUDA'
    cuda = [name for kind, name, _i, _s in draw_preferences() if kind == "prop"]
    p.device = 'CPU'
    return {
        "device": p.device,
        "props_drawn": [name for kind, name, _i, _s in drawn if kind == "prop"],
        "labels": labels(drawn),
        "props_drawn_cuda": cuda,
        "setup_panel": setup_panel,
    }


# --- 13. Online access.

@step
def setup_backend_offline():
    setup = module(".runtime.setup")
    online = bpy.app.online_access
    try:
        bpy.ops.scail2.setup_backend()
        error = None
    except RuntimeError as ex:
        error = str(ex)
    return {"online_access": online, "error": error, "started": setup.setup_state() is not None}


# --- 14. The Backend Python, a failure that stays readable, and cleared by a backend that answers.

@step
def setup_backend_with_the_backend_python():
    setup = module(".runtime.setup")
    bpy.context.preferences.system.use_online_access = True
    p = prefs()
    p.python_path = WORK["distro_python"]
    try:
        result = bpy.ops.scail2.setup_backend()
        state = setup.setup_state()
        assert state is not None, result
        assert state["run"].wait(60.0), "the setup did not end"
        setup._poll_setup()
        failure = draw_preferences()
        with open(WORK["distro_python_log"], encoding="utf-8") as fh:
            argv = fh.read().split()
        message = state["run"].message
        # The weights check's failure is drawn the same way (a Python that fails there too).
        p.weights_dir = WORK_DIR
        assert bpy.ops.scail2.check_weights() == {'FINISHED'}
        doctor = setup.doctor_state(module("").preferences.resolved_python(p), WORK_DIR)
        assert doctor["run"].wait(60.0), "the weights check did not end"
        doctor_drawn = draw_preferences()
        p.weights_dir = ""
        p.python_path = WORK["backend_python"]
        checked = bpy.ops.scail2.check_backend()
        after = draw_preferences()
    finally:
        bpy.context.preferences.system.use_online_access = False
    return {
        "argv": argv,
        "status": state["run"].status,
        "message": message,
        "failure_labels": [(text, icon) for kind, text, icon, _s in failure if kind == "label"],
        "doctor_message": doctor["run"].message,
        "doctor_labels": [(text, icon) for kind, text, icon, _s in doctor_drawn if kind == "label"],
        "checked": sorted(checked),
        "check": setup.last_check(module("").preferences.resolved_python(p)).message,
        "state_after_check": setup.setup_state() is not None,
        "labels_after_check": [(text, icon) for kind, text, icon, _s in after if kind == "label"],
    }


# --- Scenes and jobs for the imports.

def new_scene(name):
    scene = bpy.data.scenes.new(name)
    scene.render.fps, scene.render.fps_base = 24, 1.0
    scene.render.resolution_x, scene.render.resolution_y = 64, 32
    scene.sequence_editor_create()
    data = bpy.data.cameras.new(name + " camera")
    camera = bpy.data.objects.new(name + " camera", data)
    scene.collection.objects.link(camera)
    scene.camera = camera
    return scene


def areas(*types_):
    """The window's first areas turned into ``types_`` (one each)."""
    found = list(window().screen.areas)[:len(types_)]
    for area, kind in zip(found, types_):
        area.type = kind
    return found


def history_entry(scene, job_id, job_dir, manifest, frames, settings):
    """A history entry as Generate or Send to Farm leave one; the scene's active entry."""
    history = scene.scail2_job.history
    item = history.add()
    item.name = item.job_id = job_id
    item.job_dir, item.manifest, item.frames = job_dir, manifest, frames
    item.settings_json = json.dumps(dict({"spec": {"seed": 1234}, "ui": {}}, **settings))
    scene.scail2_job.active_history_index = len(history) - 1
    return item


def planes(scene):
    return [o for o in scene.objects if "scail2" in o and o.type == 'MESH']


def strips(scene):
    return [s for s in scene.sequence_editor.strips if "scail2" in s]


# --- 16. The camera plane shows nothing outside the job's frames.

@step
def plane_outside_the_jobs_frames():
    scene = new_scene("Plane")
    show(scene)
    scene.frame_set(1)
    with bpy.context.temp_override(window=window()):
        result = bpy.ops.scail2.import_result(filepath=WORK["jobs"]["eight"], form='PLANE', frame_start=1)
    assert result == {'FINISHED'}, result
    plane = planes(scene)[0]
    selected = plane.select_get() and bpy.context.view_layer.objects.active == plane
    mix = plane.active_material.node_tree.nodes["SCAIL2 Shown"]
    shown = {}
    for frame in (0, 1, 6, 12, 13, 100, 190):
        scene.frame_set(frame)
        shown[frame] = mix.inputs["Fac"].default_value  # 0: the Transparent BSDF, 1: the frames
    return {"shown": shown, "selected": selected,
            "surface_from": [link.from_node.name for link in mix.outputs[0].links[0].to_socket.links]}


# --- 17. Import Result from the Add menus, History's Import As, ImportHelper, the option mix-in, a FileHandler.

@step
def import_result_where_artists_look():
    found = {}
    for menu in ("SEQUENCER_MT_add", "VIEW3D_MT_add"):
        cls = getattr(bpy.types, menu)
        calls = []
        for draw in cls._dyn_ui_initialize():
            if getattr(draw, "__module__", "").startswith(PKG):
                calls += recorded(draw)
        found[menu] = [(name, set_.get("form"), set_.get("filepath")) for kind, name, _i, set_ in calls
                       if kind == "operator"]
    return found


@step
def import_helper_and_shared_options():
    from bpy_extras.io_utils import ImportHelper

    operator = bpy.types.SCAIL2_OT_import_result
    options = sys.modules[PKG + ".props.import_options"].ImportOptions
    scene_job = type(bpy.context.scene.scail2_job)
    scene_props = {p.identifier for p in scene_job.bl_rna.properties}
    operator_props = {p.identifier for p in bpy.ops.scail2.import_result.get_rna_type().properties}
    own = set(options.__annotations__)
    return {
        "import_helper": issubclass(operator, ImportHelper),
        "mixin_in_operator": issubclass(operator, options),
        "mixin_in_scene": issubclass(scene_job, options),
        "options": sorted(own),
        "scene_has": sorted(own & scene_props),
        "operator_has": sorted(own & operator_props),
    }


@step
def history_import_as():
    scene = new_scene("History")
    show(scene)
    history_entry(scene, "eight", os.path.dirname(WORK["jobs"]["eight"]), WORK["jobs"]["eight"], 8,
                  {"import": {"form": "STRIP", "frame_start": 1, "distance": 10.0}})
    drawn = draw_panel("SCAIL2_PT_view3d_history")
    with bpy.context.temp_override(window=window()):
        result = bpy.ops.scail2.history_import(index=0, form='PLANE')
        again = bpy.ops.scail2.history_import(index=0)
    return {
        "menus": [name for kind, name, _i, _s in drawn if kind == "menu_enum"],
        "labels": labels(drawn),
        "results": [sorted(result), sorted(again)],
        "planes": len(planes(scene)),
        "strips": len(strips(scene)),
    }


@step
def drop_a_job_file():
    """What Blender does with a file dropped on an editor: the handler's poll, then its operator on the file.

    In background mode an operator is never invoked (no event), so the form the editor's area chooses in
    ``invoke`` is passed here as ``FORM_OF_AREA`` says."""
    handler = bpy.types.SCAIL2_FH_import_result
    form_of_area = sys.modules[PKG + ".operators.import_result"].FORM_OF_AREA
    view3d, sequencer = areas('VIEW_3D', 'SEQUENCE_EDITOR')
    scene = new_scene("Drop")
    show(scene)
    polls, made = {}, {}
    for area, path in ((view3d, WORK["jobs"]["review"]), (sequencer, WORK["jobs"]["eight"])):
        with bpy.context.temp_override(window=window(), area=area):
            polls[area.type] = handler.poll_drop(bpy.context)
            result = bpy.ops.scail2.import_result(filepath=path, form=form_of_area[area.type])
        made[area.type] = {"result": sorted(result), "planes": len(planes(scene)), "strips": len(strips(scene))}
    with bpy.context.temp_override(window=window(), area=view3d):
        view3d.type = 'PROPERTIES'
        polls["PROPERTIES"] = handler.poll_drop(bpy.context)
    return {
        "operator": handler.bl_import_operator,
        "extensions": handler.bl_file_extensions,
        "polls": polls,
        "made": made,
    }


# --- 18. A farm entry not finished, Matte on 0 frames, a job cancelled while decoding.

@step
def farm_entry_not_finished():
    scene = new_scene("Farm")
    show(scene)
    farm = WORK["farm"]
    history_entry(scene, farm["name"], farm["job_dir"], os.path.join(farm["job_dir"], "manifest.json"), 0,
                  {"import": {"form": "STRIP"}, "farm": {"farm_dir": farm["farm_dir"]}})
    drawn = draw_panel("SCAIL2_PT_view3d_history")
    errors = {}
    for name, call in (("import", bpy.ops.scail2.history_import), ("matte", bpy.ops.scail2.matte_result)):
        try:
            with bpy.context.temp_override(window=window()):
                errors[name] = call(index=0)
        except RuntimeError as ex:
            errors[name] = str(ex)
    return {"operators": [name for kind, name, _i, _s in drawn if kind == "operator"], "errors": errors}


@step
def cancelled_while_decoding():
    job_module, session, follow = module(".core.job"), module(".runtime.session"), module(".runtime.follow")
    scene = new_scene("Cancelled")
    show(scene)
    job_dir = os.path.join(WORK_DIR, "cancelled-job")
    os.makedirs(job_dir, exist_ok=True)
    meta = session.job_meta(scene, scene, {"form": "STRIP"}, {}, label="cancelled while decoding")
    job = job_module.Job(key="k1", spec={"seed": 77}, job_dir=job_dir, meta=meta, status="cancelled",
                         phase="decode", segment=1, segments=1, frames=8, frames_ready=0)
    sampling = job_module.Job(key="k2", spec={"seed": 78}, job_dir=job_dir, meta=meta, status="cancelled",
                              phase="sample", segment=1, segments=1, frames=8, frames_ready=0)
    follow.apply_changes([job_module.Change(job, "cancelled")], interactive=False)
    after_decode = [(i.name, i.seed, i.frames, i.note) for i in scene.scail2_job.history]
    try:
        with bpy.context.temp_override(window=window()):
            again = bpy.ops.scail2.history_import(index=0)
    except RuntimeError as ex:
        again = str(ex)
    follow.apply_changes([job_module.Change(sampling, "cancelled")], interactive=False)
    return {"after_decode": after_decode, "after_sampling": len(scene.scail2_job.history),
            "outcome": list(job.meta.get("outcome") or ()), "import_again": again}


# --- 19. Lines the default sidebar cuts, and the masks with Masks = None.

@step
def sidebar_lines():
    scene = new_scene("Sidebar")
    show(scene)
    scene.scail2_sources.reference_source = 'FILE'
    generate = draw_panel("SCAIL2_PT_view3d_generate")
    item = scene.scail2_job.history.add()
    item.name = item.job_id = "20261206-101500-shot"
    item.frames, item.seed = 81, 2147483647
    history = draw_panel("SCAIL2_PT_view3d_history")
    return {"generate": labels(generate), "history": labels(history)}


@step
def masks_none_progress():
    exports, input_render = module(".sources.exports"), module(".runtime.input_render")
    scene = new_scene("Masks")
    show(scene)
    scene.scail2_sources.mask_source = 'NONE'
    keys = [exports.DRIVING, exports.DRIVING_MASK, exports.REFERENCE]
    with bpy.context.temp_override(window=window()):
        _job, _level, message = input_render.start(bpy.context, keys, then=lambda context: (None, 'INFO', ""))
        shown = input_render.active().text()
        input_render.cancel()
    return {"message": message, "shown": shown}


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1, default=str)
