"""Child-process script for runtime/test_review.py: the review loop through the installed extension.

Run as ``python review_script.py ZIP WORK_DIR REPORT_JSON`` with ``BLENDER_USER_RESOURCES`` pointing at
an empty folder. WORK_DIR/config.json names the backend Python, the footage and a copy of the reference
(the test changes that copy later). Installs the built extension with the tiny model on the CPU, runs a
wedge of three takes of one shot (strip and camera plane) and reviews them; every step is recorded in
REPORT_JSON as ``{name: {"ok", "detail"}}``. The checks are in runtime/test_review.py.
"""

import json
import os
import sys

ZIP_PATH, WORK_DIR, REPORT_PATH = sys.argv[1:4]

import bpy  # noqa: E402  (after the environment is set)
from script_common import PKG, draw_panels, install_tiny, module, report, show, step, window  # noqa: E402

with open(os.path.join(WORK_DIR, "config.json"), encoding="utf-8") as fh:
    CONFIG = json.load(fh)

STATE = {}


def scene():
    return bpy.data.scenes["Review"]


def history():
    return scene().scail2_job.history


def result_strips():
    editor = scene().sequence_editor
    return sorted((s for s in editor.strips if "scail2" in s), key=lambda s: s.channel)


def result_planes():
    return [o for o in scene().objects if "scail2" in o]


def review_file(item):
    with open(os.path.join(item.job_dir, "review.json"), encoding="utf-8") as fh:
        return json.load(fh)


def layout_state():
    """What the layout shows: each result strip and plane with the take it comes from."""
    return {
        "strips": [{"job_dir": s["scail2"]["job_dir"], "channel": s.channel, "offset_x": s.transform.offset_x,
                    "mute": s.mute, "compare": "scail2_compare" in s} for s in result_strips()],
        "planes": [{"job_dir": o["scail2"]["job_dir"], "matrix": [list(row) for row in o.matrix_basis],
                    "parent": o.parent.name if o.parent else None} for o in result_planes()],
    }


def takes_state():
    return [{"job_id": t.job_id, "job_dir": t.job_dir, "version": t.version, "shot": t.shot, "seed": t.seed,
             "status": t.take_status, "rating": t.rating, "name": t.name, "derived_from": t.derived_from,
             "notes": [[n.frame, n.text] for n in t.notes]} for t in history()]


@step
def install():
    install_tiny(ZIP_PATH, CONFIG["backend_python"], os.path.join(WORK_DIR, "output"))
    return sorted(op for op in dir(bpy.ops.scail2))


@step
def wedge_of_three():
    shot = bpy.data.scenes.new("Review")
    shot.render.fps, shot.render.fps_base = 24, 1.0
    shot.render.resolution_x, shot.render.resolution_y = 128, 64
    shot.frame_start, shot.frame_end = 1, 65
    shot.sequence_editor_create()
    driving = shot.sequence_editor.strips.new_movie("driving", CONFIG["footage"], 1, 1, fit_method='FIT')
    camera = bpy.data.objects.new("ReviewCam", bpy.data.cameras.new("ReviewCam"))
    shot.collection.objects.link(camera)
    shot.camera = camera
    show(shot)
    shot.sequence_editor.active_strip = driving
    src = shot.scail2_sources
    src.driving_source, src.mask_source, src.reference_source = 'STRIP', 'NONE', 'FILE'
    src.reference_file = CONFIG["reference"]
    job = shot.scail2_job
    job.width, job.height = 128, 64
    job.use_custom_sampling = True
    job.steps = 2
    job.use_frame_range = True
    job.frame_start, job.frame_end = 1, 8
    job.form = 'BOTH'
    job.wedge_kind, job.wedge_count = 'SEED', 3
    result = bpy.ops.scail2.wedge()
    assert result == {'FINISHED'}, result
    return {"takes": takes_state(), "layout": layout_state(), "seed_field": job.seed, "locked": job.use_seed_lock,
            "reviews": [review_file(t) for t in history()],
            "manifest_seeds": [json.load(open(t.manifest, encoding="utf-8"))["seed"] for t in history()]}


@step
def history_rows():
    """Each row as the History list draws it (its real draw_item against a recording layout)."""
    drawn = []

    class Layout:
        def __init__(self, calls):
            self.calls = calls

        def row(self, **_kwargs):
            return self

        def label(self, text="", icon='NONE', **_kwargs):
            self.calls.append(text if icon == 'NONE' else "{:s} [{:s}]".format(text, icon))

        def prop(self, data, name, **_kwargs):
            self.calls.append(getattr(data, name))

    ui_list = bpy.types.SCAIL2_UL_history
    for item in history():
        calls = []
        ui_list.draw_item(ui_list, bpy.context, Layout(calls), scene().scail2_job, item, 0, None, "", 0)
        drawn.append(" ".join(calls))
    return drawn


@step
def scores_in_the_panel():
    """Scores and flags the worker put in take v001's manifest, drawn in the Review panel; Next Flag goes there."""
    protocol = sys.modules[PKG + ".protocol"]
    first = history()[0]
    with open(first.manifest, encoding="utf-8") as fh:
        data = json.load(fh)
    scores = protocol.TakeScores(scores=[
        protocol.Score(name="motion", value=0.93, what="flow agreement", limits="no hands",
                       per_frame=[0.9] * 8),
        protocol.Score(name="temporal", value=0.41, what="warp error", limits="no hands", per_frame=[0.5] * 8),
    ], flags=[protocol.Flag(frame=3, score="temporal", reason="pops"),
              protocol.Flag(frame=6, score="motion", reason="arm lost")])
    data["review"] = protocol.ManifestReview(scores=scores).to_dict()
    with open(first.manifest, "w", encoding="utf-8") as fh:
        json.dump(data, fh)
    scene().scail2_job.active_history_index = 0
    drawn = draw_panels()["SCAIL2_PT_sequencer_review"]
    frame_map = module(".runtime.review").scene_frame_map(scene(), first)
    scene().frame_set(1)
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.scail2.take_jump_flag(index=0) == {'FINISHED'}
        at_first = scene().frame_current
        assert bpy.ops.scail2.take_jump_flag(index=0) == {'FINISHED'}
        at_second = scene().frame_current
        stuck = bpy.ops.scail2.take_jump_flag(index=0)
        back = bpy.ops.scail2.take_jump_flag(index=0, previous=True)
    return {"drawn": drawn, "frame_map": {str(k): v for k, v in frame_map.items()}, "at_first": at_first,
            "at_second": at_second, "stuck": sorted(stuck), "back": sorted(back), "after_back": scene().frame_current}


@step
def status_rating_label_and_filter():
    third = history()[2]
    third.take_status = 'REJECTED'
    third.rating = 2
    third.label = "too stiff"  # as the panel and the list rename it
    import types

    # Blender gives a list its item flag as an instance attribute; the class alone has none.
    ui_list = types.SimpleNamespace(bitflag_filter_item=1 << 30)
    filter_items = bpy.types.SCAIL2_UL_history.filter_items
    settings = scene().scail2_job
    shown = {}
    for picked in (set(), {'REJECTED'}, {'APPROVED', 'ON_HOLD'}):
        settings.history_filter = picked
        flags, _order = filter_items(ui_list, bpy.context, settings, "history")
        shown[",".join(sorted(picked)) or "all"] = [bool(f) for f in flags]
    settings.history_filter = set()
    return {"review": review_file(third), "shown": shown}


@step
def note_on_a_frame():
    first = history()[0]
    frame_map = module(".runtime.review").scene_frame_map(scene(), first)
    scene().frame_set(frame_map[4])
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.scail2.take_add_note(index=0, text="left hand pops") == {'FINISHED'}
    markers = [(m.name, m.frame) for m in scene().timeline_markers]
    return {"markers": markers, "scene_frame": frame_map[4], "review": review_file(first),
            "notes": [[n.frame, n.text] for n in first.notes]}


@step
def compare_two_takes():
    settings = scene().scail2_job
    settings.compare_with = history()[1].job_id
    settings.compare_mode = 'WIPE'
    compare = module(".runtime.compare")
    before = layout_state()
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.scail2.compare(index=0) == {'FINISHED'}

    def parts():
        found = compare.parts(scene())
        return {role: {"job_dir": s["scail2"]["job_dir"] if "scail2" in s else None, "channel": s.channel,
                       "mute": s.mute, "type": s.type, "handles": [s.frame_final_start, s.frame_final_end],
                       "scale_x": s.transform.scale_x if role != "WIPE" else None,
                       "offset_x": s.transform.offset_x if role != "WIPE" else None,
                       "inputs": [s.input_1.name, s.input_2.name] if role == "WIPE" else None,
                       "name": s.name, "fader": s.effect_fader if role == "WIPE" else None}
                for role, s in found.items()}

    wipe = parts()
    layout_during = layout_state()
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.scail2.compare_toggle() == {'FINISHED'}
        side = parts()
        assert bpy.ops.scail2.compare_toggle() == {'FINISHED'}
        wipe_again = parts()
        assert bpy.ops.scail2.compare_end() == {'FINISHED'}
    ended = {"parts": parts(), "layout": layout_state()}
    settings.compare_with = 'DRIVING'
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.scail2.compare(index=0) == {'FINISHED'}
        driving = parts()
        assert bpy.ops.scail2.compare_end() == {'FINISHED'}
    return {"before": before, "wipe": wipe, "layout_during": layout_during, "side": side,
            "wipe_again": wipe_again, "ended": ended, "driving": driving,
            "takes": [history()[0].job_dir, history()[1].job_dir]}


@step
def approve_in_one_undo_step():
    strip = result_strips()[0]
    strip.transform.offset_x = 12.0  # the artist moved the take in the layout
    plane = result_planes()[0]
    plane.location.x += 0.25
    with bpy.context.temp_override(window=window()):
        bpy.ops.ed.undo_push(message="before Approve")
    before = layout_state()
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.scail2.take_approve('EXEC_DEFAULT', True, index=0) == {'FINISHED'}
    after = layout_state()
    status_after = [t.take_status for t in history()]
    file_after = review_file(history()[0])["status"]
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.ed.undo() == {'FINISHED'}
    undone = layout_state()
    status_undone = [t.take_status for t in history()]
    file_undone = review_file(history()[0])["status"]
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.ed.redo() == {'FINISHED'}
    return {"before": before, "after": after, "undone": undone, "redone": layout_state(),
            "status_after": status_after, "status_undone": status_undone, "file_after": file_after,
            "file_undone": file_undone, "takes": [t.job_dir for t in history()]}


@step
def a_new_take_leaves_the_approved_one_in_place():
    before = layout_state()
    job = scene().scail2_job
    job.wedge_kind, job.wedge_count = 'SEED', 1
    assert bpy.ops.scail2.wedge() == {'FINISHED'}
    newest = history()[-1]
    return {"before": before, "after": layout_state(), "status": newest.status, "note": newest.note,
            "version": newest.version}


@step
def use_settings():
    job = scene().scail2_job
    job.steps, job.prompt, job.use_seed_lock, job.width = 9, "changed", False, 256
    second = history()[1]
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.scail2.take_use_settings(index=1) == {'FINISHED'}
    return {"seed": job.seed, "take_seed": second.seed, "locked": job.use_seed_lock, "steps": job.steps,
            "prompt": job.prompt, "width": job.width, "height": job.height, "form": job.form,
            "frames": [job.use_frame_range, job.frame_start, job.frame_end]}


@step
def review_seen_by_a_second_artist():
    """Another artist rates take v002 in its folder; opening the saved file shows it, and so does Refresh."""
    takes = module(".core.takes")
    path = os.path.join(WORK_DIR, "review.blend")
    bpy.ops.wm.save_as_mainfile(filepath=path)
    second_dir = history()[1].job_dir
    review = takes.read_review(second_dir)
    takes.write_review(second_dir, takes.updated(review, rating=5, status="on_hold", label="keep for the hands"))
    bpy.ops.wm.open_mainfile(filepath=path)
    show(scene())
    opened = takes_state()[1]
    review = takes.read_review(second_dir)
    takes.write_review(second_dir, takes.updated(review, rating=1))
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.scail2.take_refresh() == {'FINISHED'}
    return {"opened": opened, "refreshed": takes_state()[1]}


@step
def redo_refuses_a_changed_input():
    count = len(history())
    with open(CONFIG["reference"], "ab") as fh:
        fh.write(b"\0" * 16)  # other bytes, the same picture (JPEG readers stop at its end marker)
    try:
        bpy.ops.scail2.history_redo(index=0)
        refused = None
    except RuntimeError as ex:
        refused = str(ex)
    after_refusal = len(history())
    first_id = history()[0].job_id
    assert bpy.ops.scail2.history_redo(index=0, on_new_input=True) == {'FINISHED'}
    newest = history()[-1]
    return {"refused": refused, "count": count, "after_refusal": after_refusal, "after_new": len(history()),
            "derived_from": newest.derived_from, "first": first_id, "review": review_file(newest),
            "inputs": json.load(open(newest.manifest, encoding="utf-8"))["inputs"]}


@step
def export_review():
    export_module = module(".runtime.review_export")
    out = os.path.join(WORK_DIR, "review.html")
    with bpy.context.temp_override(window=window()):
        assert bpy.ops.scail2.export_review(filepath=out, shot_only=True) == {'FINISHED'}
    export = export_module.current()
    import time
    deadline = time.monotonic() + 120
    while export.running:
        assert time.monotonic() < deadline, "timed out"
        export_module._tick()
        time.sleep(0.1)
    return {"returncode": export.returncode, "message": export.message, "exists": os.path.isfile(out),
            "panel": draw_panels()["SCAIL2_PT_sequencer_review"]}


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1, default=str)
module(".runtime.follow").shutdown()
