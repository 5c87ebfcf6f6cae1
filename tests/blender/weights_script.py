"""Child-process script for test_get_weights.py: Get Weights in Blender, with online access off and on.

Run as ``python weights_script.py ZIP BACKEND_PYTHON REPORT_JSON WORK`` with ``BLENDER_USER_RESOURCES``
pointing at an empty folder and HF_ENDPOINT at the test's stand-in for the Hugging Face Hub. Every
step is recorded in REPORT_JSON as ``{name: {"ok": bool, "detail": ...}}``.
"""

import json
import os
import sys

ZIP_PATH, BACKEND_PYTHON, REPORT_PATH, WORK = sys.argv[1:5]

import bpy  # noqa: E402  (after the environment is set)

from script_common import PKG, REPO, draw_preferences_of, module, report, step  # noqa: E402


def prefs():
    return bpy.context.preferences.addons[PKG].preferences


@step
def install():
    result = bpy.ops.extensions.package_install_files(filepath=ZIP_PATH, repo=REPO, enable_on_install=True)
    assert result == {'FINISHED'}, result
    p = prefs()
    p.python_path = BACKEND_PYTHON
    p.weights_dir = os.path.join(WORK, "weights")
    p.weights_plan = 'FP8'
    p.hf_token = "hf_from_the_preferences"


@step
def offline_refused():
    bpy.context.preferences.system.use_online_access = False
    assert not bpy.app.online_access
    try:  # an operator reporting an error raises in a background Blender
        bpy.ops.scail2.get_weights()
        raise AssertionError("Get Weights ran with online access off")
    except RuntimeError as ex:
        assert "Online access is off" in str(ex), str(ex)
    weights = module(".runtime.weights")
    assert weights.download_state() is None  # nothing started
    try:
        weights.start_download(prefs())
    except weights.WeightsError as ex:
        return str(ex)
    raise AssertionError("started with online access off")


@step
def downloads_sets_the_folder_and_checks_it():
    bpy.context.preferences.system.use_online_access = True
    assert bpy.ops.scail2.get_weights() == {'FINISHED'}
    weights = module(".runtime.weights")
    run = weights.download_state()["run"]
    running = [[kind, text, args[0] if args else ""]  # drawn while it runs
               for kind, text, _icon, args in draw_preferences_of(prefs(), bpy.context)]
    assert run.wait(600), "still running"
    assert run.status == "done", (run.message, run.lines()[-5:])
    weights._poll()  # what the timer does once the run has ended (timers do not fire in a background bpy)
    p = prefs()
    setup = module(".runtime.setup")
    state = setup.doctor_state(module(".preferences").resolved_python(p), os.path.join(WORK, "weights"))
    assert state is not None, "Check Weights did not start"
    assert state["run"].wait(600)
    view = module(".core.weights_download").DownloadView(run.lines())
    finished = [entry[1] for entry in draw_preferences_of(p, bpy.context) if entry[0] == "label"]
    return {"running": running, "finished": finished,
            "weights_dir": p.weights_dir, "memory_mode": p.memory_mode, "end": view.end.event,
            "doctor_status": state["run"].status, "doctor_lines": state["run"].lines()[-40:]}


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1)
