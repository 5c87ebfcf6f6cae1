"""What the child-process scripts (generate_script.py, segment_script.py) share: the installed extension's
names, the step recorder and the stand-in for Blender's event loop. Imported after the environment is set."""

import sys
import time
import traceback

import bpy

REPO = "user_default"
PKG = "bl_ext.{:s}.scail2".format(REPO)
HAS_SEQUENCER_SCENE = bpy.app.version >= (5, 0, 0)

report = {"blender_version": bpy.app.version_string}


def step(fn):
    """Run ``fn`` now and record its outcome under its name."""
    started = time.monotonic()
    try:
        report[fn.__name__] = {"ok": True, "detail": fn()}
    except BaseException:
        report[fn.__name__] = {"ok": False, "detail": traceback.format_exc()}
    report[fn.__name__]["seconds"] = round(time.monotonic() - started, 2)
    return fn


def module(suffix):
    return sys.modules[PKG + suffix]


def window():
    return bpy.context.window_manager.windows[0]


def show(scene):
    win = window()
    win.scene = scene
    if HAS_SEQUENCER_SCENE:
        win.workspace.sequencer_scene = scene


def pump(until, timeout=120.0):
    """Call the timer function as Blender's event loop would, until ``until()`` or the timeout."""
    follow = module(".runtime.follow")
    deadline = time.monotonic() + timeout
    ticks = 0
    while not until():
        assert time.monotonic() < deadline, "timed out"
        interval = follow.tick()
        ticks += 1
        time.sleep(0.05 if interval is None else min(interval, 0.05))
    return ticks


def queued_job(scene, jobs_before, timeout=120.0):
    """The job Generate queued for ``scene`` after its ``jobs_before`` earlier ones. Generate has the worker check
    the inputs first and queues the job when the answer comes (a timer tick), so this pumps until it is there."""
    session = module(".runtime.session")
    pump(lambda: len(session.scene_jobs(scene)) > jobs_before, timeout)
    return session.scene_jobs(scene)[jobs_before]


def render_inputs(timeout=120.0):
    """Call the input render's timer function as Blender's event loop would, until it ends; the texts it showed."""
    input_render = module(".runtime.input_render")
    deadline = time.monotonic() + timeout
    shown = []
    while input_render.active() is not None:
        assert time.monotonic() < deadline, "timed out"
        shown.append(input_render.active().text())
        input_render._tick()
    return shown


def install_tiny(zip_path, backend_python, output_dir):
    """Install and enable the built extension, pointed at the backend environment with the tiny models on the CPU."""
    result = bpy.ops.extensions.package_install_files(filepath=zip_path, repo=REPO, enable_on_install=True)
    assert result == {'FINISHED'}, result
    prefs = bpy.context.preferences.addons[PKG].preferences
    prefs.python_path = backend_python
    prefs.model_source = 'TINY'
    prefs.device = 'CPU'
    prefs.output_dir = output_dir
    return prefs


def draw_panels():
    """``{panel class name: [calls]}``: each SCAIL panel's real ``draw`` run against a recording layout.

    Calls are ``label:TEXT``, ``operator:IDNAME`` and ``prop:NAME``; every other layout call returns
    another recorder. An icon this Blender does not know raises, as Blender would print an error.
    """
    import types

    icons = {i.identifier for i in bpy.types.UILayout.bl_rna.functions["operator"].parameters["icon"].enum_items}
    drawn = {}
    for name in sorted(n for n in dir(bpy.types) if n.startswith("SCAIL2_PT_")):
        calls = []

        class Layout:
            def __getattr__(self, attr, calls=calls):
                def call(*args, **kwargs):
                    if kwargs.get("icon", 'NONE') not in icons:
                        raise ValueError("no icon {!r} in this Blender".format(kwargs["icon"]))
                    if attr == "label":
                        calls.append("label:" + kwargs.get("text", ""))
                    elif attr == "operator":
                        calls.append("operator:" + args[0])
                    elif attr in ("prop", "prop_search"):
                        calls.append("prop:" + args[1])
                    return Layout()
                return call

            def __setattr__(self, attr, value):
                pass

        getattr(bpy.types, name).draw(types.SimpleNamespace(layout=Layout()), bpy.context)
        drawn[name] = calls
    return drawn


def add_movie_as_in_the_ui(scene, filepath, channel, frame_start):
    """The sequencer's own operator, as an artist adds footage ("Adjust Playback Rate" on); the new strip."""
    show(scene)
    win = window()
    area = win.screen.areas[-1]
    area.type = 'SEQUENCE_EDITOR'
    with bpy.context.temp_override(window=win, screen=win.screen, area=area):
        result = bpy.ops.sequencer.movie_strip_add(
            filepath=filepath, frame_start=frame_start, channel=channel, sound=False, use_framerate=False)
    assert result == {'FINISHED'}, result
    return scene.sequence_editor.active_strip


# --- A stand-in for UILayout, checking every call against Blender's own RNA definitions.

UILAYOUT_FUNCS = bpy.types.UILayout.bl_rna.functions
ICONS = set(UILAYOUT_FUNCS["label"].parameters["icon"].enum_items.keys())


class OperatorPropsStub:
    def __init__(self, idname):
        module, name = idname.split(".")
        op = getattr(getattr(bpy.ops, module), name)
        object.__setattr__(self, "_props", set(op.get_rna_type().properties.keys()))
        object.__setattr__(self, "_idname", idname)

    def __setattr__(self, name, value):
        assert name in self._props, "{:s} has no property {!r}".format(self._idname, name)


class LayoutStub:
    """Accepts only UILayout functions/keywords that exist, icons that exist, properties and operators that exist."""

    def __init__(self, log):
        object.__setattr__(self, "_log", log)

    def __setattr__(self, name, value):
        assert name in bpy.types.UILayout.bl_rna.properties, "UILayout has no attribute " + name

    def __getattr__(self, name):
        assert name in UILAYOUT_FUNCS, "UILayout has no function " + name
        params = [p for p in UILAYOUT_FUNCS[name].parameters.keys() if not UILAYOUT_FUNCS[name].parameters[p].is_output]
        log = self._log

        def call(*args, **kwargs):
            assert len(args) <= len(params), "{:s}: too many positional arguments".format(name)
            unknown = set(kwargs) - set(params)
            assert not unknown, "{:s}: unknown keywords {!r}".format(name, unknown)
            icon = kwargs.get("icon", "NONE")
            assert icon in ICONS, "unknown icon " + icon
            if name == "prop":
                data, prop = args[:2]
                assert prop in data.bl_rna.properties, "no property " + prop
            log.append((name, kwargs.get("text"), icon, args[:1] if name == "operator" else ()))
            if name == "operator":
                return OperatorPropsStub(args[0])
            return LayoutStub(log)

        return call


def draw_preferences_of(preferences, context):
    """The add-on preferences' real ``draw`` run against `LayoutStub`: the log of its layout calls."""
    log = []

    class Proxy:
        layout = LayoutStub(log)

        def __getattr__(self, name):
            return getattr(preferences, name)

    type(preferences).draw(Proxy(), context)
    return log
