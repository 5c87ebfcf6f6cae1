"""Child-process script for test_generate.py: run SCAIL-2 jobs through the installed extension.

Run as ``python generate_script.py ZIP WORK_DIR REPORT_JSON`` with
``BLENDER_USER_RESOURCES`` pointing at an empty folder (set before ``bpy`` is
imported). WORK_DIR/config.json names the backend Python, the footage and the
reference. Installs and enables the built extension, points it at the backend
environment with the tiny test model on the CPU, and records every step in
REPORT_JSON as ``{name: {"ok": bool, "detail": ...}}``; a failing step does not
stop the later ones. The checks themselves are in test_generate.py.

The bpy module always runs in background mode, so ``scail2.generate`` runs its
job to the end before returning (the render-farm path). The interactive path
(return at once, a timer follows the job) is exercised by setting
``runtime.session.force_async`` and calling the timer function ``runtime.follow.tick``
by hand, as Blender's event loop would.
"""

import json
import os
import sys
import time

ZIP_PATH, WORK_DIR, REPORT_PATH = sys.argv[1:4]
MODE = sys.argv[4] if len(sys.argv) > 4 else "main"

import bpy  # noqa: E402  (after the environment is set)
from script_common import (  # noqa: E402,F401
    HAS_SEQUENCER_SCENE, PKG, REPO, add_movie_as_in_the_ui, draw_panels, install_tiny, module, pump, queued_job,
    render_inputs, report, show, step, window)

with open(os.path.join(WORK_DIR, "config.json"), encoding="utf-8") as fh:
    CONFIG = json.load(fh)

OOM_PROMPT = CONFIG["oom_prompt"]


def new_scene(name, fps):
    scene = bpy.data.scenes.new(name)
    scene.render.fps = fps
    scene.render.fps_base = 1.0
    scene.render.resolution_x, scene.render.resolution_y = 128, 64
    scene.frame_start, scene.frame_end = 1, 65
    scene.sequence_editor_create()
    return scene


def set_up_shot(scene, strip, first, last, **settings):
    """Sources from the active strip and a reference file; a small, fast job over scene frames first..last."""
    scene.sequence_editor.active_strip = strip
    src = scene.scail2_sources
    src.driving_source = 'STRIP'
    src.mask_source = 'NONE'
    src.reference_source = 'FILE'
    src.reference_file = CONFIG["reference"]
    job = scene.scail2_job
    job.width, job.height = 128, 64
    job.use_custom_sampling = True  # first: turning it on starts the values at the preset's
    job.steps = 2
    job.use_frame_range = True
    job.frame_start, job.frame_end = first, last
    for key, value in settings.items():
        setattr(job, key, value)
    show(scene)


def imported_strips(scene):
    editor = scene.sequence_editor
    return [s for s in editor.strips_all if "scail2" in s] if editor is not None else []


def strip_detail(strip):
    return {
        "name": strip.name,
        "channel": strip.channel,
        "frame_final_start": strip.frame_final_start,
        "frame_final_end": strip.frame_final_end,
        "elements": [e.filename for e in strip.elements],
        "directory": bpy.path.abspath(strip.directory),
        "props": strip["scail2"].to_dict(),
    }


def snapshot(scene):
    """Everything a failed job must leave as it was."""
    editor = scene.sequence_editor
    return {
        "strips": sorted(s.name for s in editor.strips_all) if editor is not None else [],
        "objects": sorted(o.name for o in bpy.data.objects),
        "images": sorted(i.name for i in bpy.data.images),
        "materials": sorted(m.name for m in bpy.data.materials),
        "history": len(scene.scail2_job.history),
        "frame_current": scene.frame_current,
    }


def history_detail(item):
    return {
        "name": item.name,
        "job_id": item.job_id,
        "job_dir": item.job_dir,
        "status": item.status,
        "note": item.note,
        "seed": item.seed,
        "settings": json.loads(item.settings_json),
        "thumbnail": item.thumbnail,
        "manifest": item.manifest,
        "frames": item.frames,
        "created": item.created,
    }


def run_expect_error(**props):
    try:
        result = bpy.ops.scail2.generate(**props)
    except RuntimeError as ex:
        return str(ex)
    raise AssertionError("generate did not fail: {!r}".format(result))


def inputs_folder(scene):
    return module(".sources.exports").inputs_folder(bpy.context, scene)


# --- The steps.

@step
def install():
    install_tiny(ZIP_PATH, CONFIG["backend_python"], os.path.join(WORK_DIR, "output"))
    return sorted(op for op in dir(bpy.ops.scail2))


if MODE == "farm":
    # A fresh Blender opening the saved file, as `blender -b shot.blend --python-expr ...` does.
    @step
    def farm_generate():
        bpy.ops.wm.open_mainfile(filepath=CONFIG["farm_blend"])
        scene = bpy.context.scene
        before = len(imported_strips(scene))
        result = bpy.ops.scail2.generate()
        assert result == {'FINISHED'}, result
        strips = imported_strips(scene)
        # A new take of the shot takes the place of the one shown: one strip per shot, no stack.
        assert len(strips) == before, [s.name for s in strips]
        item = scene.scail2_job.history[-1]
        bpy.ops.wm.save_mainfile()
        return {"strip": strip_detail(strips[-1]), "history": history_detail(item), "scene": scene.name}

else:
    SCENES = {}

    @step
    def generate_24fps():
        scene = new_scene("Shot24", 24)
        strip = scene.sequence_editor.strips.new_movie("driving", CONFIG["footage"], 2, 1, fit_method='FIT')
        set_up_shot(scene, strip, 1, 8)
        SCENES["24"] = scene
        started = time.monotonic()
        result = bpy.ops.scail2.generate()
        assert result == {'FINISHED'}, result
        strips = imported_strips(scene)
        assert len(strips) == 1, [s.name for s in strips]
        item = scene.scail2_job.history[0]
        return {
            "seconds": time.monotonic() - started,
            "strip": strip_detail(strips[0]),
            "driving": {"channel": strip.channel, "frame_final_start": strip.frame_final_start},
            "history": history_detail(item),
            "inputs": json.load(open(os.path.join(inputs_folder(scene), "inputs.json"), encoding="utf-8")),
            "inputs_folder": inputs_folder(scene),
        }

    @step
    def generate_30fps_ui_strip():
        scene = new_scene("Shot30", 30)
        strip = add_movie_as_in_the_ui(scene, CONFIG["footage"], 1, 1)
        set_up_shot(scene, strip, 1, 12, use_seed_lock=True, seed=1234)
        SCENES["30"] = scene
        result = bpy.ops.scail2.generate()
        assert result == {'FINISHED'}, result
        strips = imported_strips(scene)
        assert len(strips) == 1, [s.name for s in strips]
        return {
            "strip": strip_detail(strips[0]),
            "driving": {"frame_duration": strip.frame_duration, "fps": strip.fps},
            "history": history_detail(scene.scail2_job.history[0]),
        }

    @step
    def changed_sources_are_exported_again():
        """Generate (default: export what is missing) after the reference file changed and the strip moved."""
        import shutil

        scene = new_scene("ShotStale", 24)
        strip = scene.sequence_editor.strips.new_movie("driving", CONFIG["footage"], 2, 1, fit_method='FIT')
        set_up_shot(scene, strip, 1, 8)
        inputs_json = os.path.join(inputs_folder(scene), "inputs.json")
        session = module(".runtime.session")

        def generate():
            assert bpy.ops.scail2.generate() == {'FINISHED'}
            with open(inputs_json, encoding="utf-8") as fh:
                inputs = json.load(fh)
            spec = session.scene_jobs(scene)[-1].spec
            return {"reference": spec["reference"], "frame_start": spec["frame_start"],
                    "frame_end": spec["frame_end"], "scene_frame_start": inputs["driving"]["scene_frame_start"],
                    "inputs_mtime": os.stat(inputs_json).st_mtime_ns}

        first = generate()
        unchanged = generate()
        other = os.path.join(WORK_DIR, "other_reference.jpg")
        shutil.copy(CONFIG["reference"], other)
        scene.scail2_sources.reference_file = other
        strip.frame_start = 3  # the footage now starts two frames later
        changed = generate()
        return {"first": first, "unchanged": unchanged, "changed": changed, "other": other}

    @step
    def frame_limit_starts_at_scene_range():
        scene = new_scene("ShotRange", 24)
        scene.frame_start, scene.frame_end = 10, 40
        job = scene.scail2_job
        job.use_frame_range = True
        first = [job.frame_start, job.frame_end]
        job.frame_start, job.frame_end = 12, 20
        job.use_frame_range = False
        job.use_frame_range = True
        kept = [job.frame_start, job.frame_end]
        bpy.data.scenes.remove(scene)
        return {"first": first, "kept": kept}

    @step
    def missing_reference():
        scene = SCENES["24"]
        show(scene)
        before = snapshot(scene)
        scene.scail2_sources.reference_file = os.path.join(WORK_DIR, "no-such-reference.png")
        try:
            message = run_expect_error(export='ALL')
        finally:
            scene.scail2_sources.reference_file = CONFIG["reference"]
        return {"message": message, "before": before, "after": snapshot(scene)}

    @step
    def sequencer_output_without_strips():
        """Driving = Sequencer Output in a scene whose sequencer is empty and that has no camera."""
        scene = bpy.data.scenes.new("No Strips")
        scene.sequence_editor_create()
        scene.scail2_sources.driving_source = 'SEQUENCER'
        scene.scail2_sources.reference_file = CONFIG["reference"]
        show(scene)
        try:
            generate = run_expect_error(export='ALL')
            try:
                bpy.ops.scail2.export_driving()
                export = "exported"
            except RuntimeError as ex:
                export = str(ex)
        finally:
            show(SCENES["24"])
            bpy.data.scenes.remove(scene)
        return {"generate": generate, "export": export}

    @step
    def output_folder_not_writable():
        """The output folder is a file: Generate and Export Reference say so in one line."""
        scene = SCENES["24"]
        show(scene)
        prefs = bpy.context.preferences.addons[PKG].preferences
        blocker = os.path.join(WORK_DIR, "not-a-folder")
        with open(blocker, "w", encoding="utf-8") as fh:
            fh.write("a file where the output folder should be\n")
        before, saved = snapshot(scene), prefs.output_dir
        prefs.output_dir = blocker
        try:
            generate = run_expect_error(export='ALL')
            try:
                bpy.ops.scail2.export_reference()
                export = "exported"
            except RuntimeError as ex:
                export = str(ex)
        finally:
            prefs.output_dir = saved
        return {"generate": generate, "export": export, "before": before, "after": snapshot(scene)}

    @step
    def reference_missing_on_disk():
        """The recorded reference was deleted after exporting: the worker refuses the job at once."""
        import shutil

        scene = SCENES["24"]
        show(scene)
        gone = os.path.join(WORK_DIR, "gone.jpg")
        shutil.copy(CONFIG["reference"], gone)
        scene.scail2_sources.reference_file = gone
        bpy.ops.scail2.export_reference()
        os.remove(gone)
        before = snapshot(scene)
        try:
            message = run_expect_error(export='NONE')
        finally:
            scene.scail2_sources.reference_file = CONFIG["reference"]
            bpy.ops.scail2.export_reference()
        return {"message": message, "before": before, "after": snapshot(scene)}

    @step
    def worker_error():
        scene = SCENES["24"]
        show(scene)
        before = snapshot(scene)
        scene.scail2_job.prompt = OOM_PROMPT
        try:
            message = run_expect_error()
        finally:
            scene.scail2_job.prompt = ""
        session, follow = module(".runtime.session"), module(".runtime.follow")
        job = session.scene_jobs(scene)[-1]
        return {
            "message": message,
            "error": {"code": job.error.code, "message": job.error.message, "hint": job.error.hint},
            "job_dir": job.job_dir,
            "before": before,
            "after": snapshot(scene),
        }

    @step
    def interactive_generate():
        session, follow = module(".runtime.session"), module(".runtime.follow")
        session.force_async = True
        try:
            scene = SCENES["24"]
            show(scene)
            before = len(imported_strips(scene))
            jobs_before = len(session.scene_jobs(scene))
            started = time.monotonic()
            result = bpy.ops.scail2.generate()
            returned = time.monotonic() - started
            assert result == {'FINISHED'}, result
            assert bpy.app.timers.is_registered(follow.tick)
            # The worker checks the inputs first: at return the job is not even queued ("checking").
            at_return = session.scene_jobs(scene)[jobs_before:]
            queued_status = at_return[0].status if at_return else "checking"
            job = queued_job(scene, jobs_before)
            status_seen = []
            phases = set()

            def finished():
                phases.add(job.phase)
                if job.status == "running":
                    status_seen.append(follow.status_line(session.get_queue(create=False)))
                return job.finished

            ticks = pump(finished)
            # One more tick: the queue is idle and the timer stops itself.
            last = follow.tick()
            image = bpy.data.images.get(follow.PREVIEW_IMAGE)
            return {
                "returned_after": returned,
                "status_at_return": queued_status,
                "status": job.status,
                "ticks": ticks,
                "phases": sorted(p for p in phases if p),
                "status_lines": status_seen[:3] + status_seen[-3:],
                "timer_after": last,
                "preview": bpy.path.abspath(image.filepath) if image is not None else None,
                "last_frame": job.preview,
                "strips_before": before,
                "strips_after": len(imported_strips(scene)),
                "history": len(scene.scail2_job.history),
                "eta_seen": job.eta_s,
            }
        finally:
            session.force_async = False

    @step
    def cancel_running_job():
        session, follow = module(".runtime.session"), module(".runtime.follow")
        session.force_async = True
        scene = SCENES["24"]
        show(scene)
        job_settings = scene.scail2_job
        job_settings.steps = 2000
        before = snapshot(scene)
        try:
            jobs_before = len(session.scene_jobs(scene))
            assert bpy.ops.scail2.generate() == {'FINISHED'}
            job = queued_job(scene, jobs_before)
            pump(lambda: job.status == "running" and job.phase == "sample" and job.step >= 2)
            assert bpy.ops.scail2.cancel_job() == {'FINISHED'}
            asked = time.monotonic()
            pump(lambda: job.finished, timeout=60.0)
            took = time.monotonic() - asked
            follow.tick()
            return {
                "status": job.status,
                "step": job.step,
                "took": took,
                "job_dir": job.job_dir,
                "frames_dir_exists": os.path.isdir(os.path.join(job.job_dir, "frames")),
                "before": before,
                "after": snapshot(scene),
                "eta": job.eta_s,
                "outcome": list(job.meta.get("outcome") or ()),
            }
        finally:
            job_settings.steps = 2
            session.force_async = False

    @step
    def resume_after_the_worker_was_killed():
        """The worker is killed mid-job: the job says so, offers Resume, and resumes in its folder (by hand, then
        automatically once when the preferences allow it)."""
        import signal

        session, follow = module(".runtime.session"), module(".runtime.follow")
        session.force_async = True
        scene = new_scene("ShotResume", 24)
        strip = scene.sequence_editor.strips.new_movie("driving", CONFIG["footage"], 2, 1, fit_method='FIT')
        set_up_shot(scene, strip, 1, 8, steps=30)
        prefs = bpy.context.preferences.addons[PKG].preferences

        def killed_job():
            jobs_before = len(session.scene_jobs(scene))
            assert bpy.ops.scail2.generate() == {'FINISHED'}
            render_inputs()  # the first time: the inputs are rendered before the job is queued
            job = queued_job(scene, jobs_before)
            pump(lambda: job.status == "running" and job.phase == "sample" and job.step >= 1)
            os.kill(session.get_queue(create=False).client.pid, signal.SIGKILL)
            pump(lambda: job.finished, timeout=60.0)
            follow.tick()
            return job

        try:
            job = killed_job()
            failed = {"status": job.status, "message": job.error.message, "hint": job.error.hint,
                      "resume_offered": "operator:scail2.resume_job" in draw_panels()["SCAIL2_PT_view3d_generate"]}
            assert bpy.ops.scail2.resume_job(job=job.key) == {'FINISHED'}
            again = session.scene_jobs(scene)[-1]
            pump(lambda: again.finished, timeout=120.0)
            follow.tick()
            resumed = {"status": again.status, "same_folder": again.job_dir == job.job_dir,
                       "history": len(scene.scail2_job.history), "strips": len(imported_strips(scene))}
            prefs.resume_automatically = True
            job = killed_job()
            auto = session.get_queue(create=False).get(job.meta.get("resumed_as", ""))
            assert auto is not None, job.meta
            pump(lambda: auto.finished, timeout=120.0)
            follow.tick()
            automatic = {"status": auto.status, "same_folder": auto.job_dir == job.job_dir,
                         "history": len(scene.scail2_job.history)}
            return {"failed": failed, "resumed": resumed, "automatic": automatic}
        finally:
            prefs.resume_automatically = False
            session.force_async = False
            show(SCENES["24"])

    @step
    def inputs_render_from_a_timer():
        """Interactively, Generate renders the 3D scene's inputs a few frames per timer tick, then queues the job;
        Cancel stops it with nothing queued, the temporary scene gone and the interrupted input forgotten."""
        session, follow = module(".runtime.session"), module(".runtime.follow")
        input_render = module(".runtime.input_render")
        scene = bpy.data.scenes.new("ShotCamera")
        scene.render.fps, scene.frame_start, scene.frame_end = 24, 1, 12
        scene.render.resolution_x, scene.render.resolution_y = 128, 64
        camera = bpy.data.objects.new("ShotCam", bpy.data.cameras.new("ShotCam"))
        scene.collection.objects.link(camera)
        camera.location = (0.0, -8.0, 1.0)
        camera.rotation_euler = (1.5, 0.0, 0.0)
        scene.camera = camera
        cube = bpy.data.objects.new("Dancer", bpy.data.meshes.new("Dancer"))
        scene.collection.objects.link(cube)
        show(scene)
        src = scene.scail2_sources
        src.driving_source, src.mask_source = 'CAMERA', 'NONE'
        src.reference_source, src.reference_file = 'FILE', CONFIG["reference"]
        job = scene.scail2_job
        job.width, job.height = 128, 64
        job.use_custom_sampling = True
        job.steps = 2
        inputs_json = os.path.join(inputs_folder(scene), "inputs.json")
        session.force_async = True
        try:
            jobs_before = len(session.scene_jobs(scene))
            started = time.monotonic()
            assert bpy.ops.scail2.generate() == {'FINISHED'}
            returned = time.monotonic() - started
            rendering = input_render.active(scene)
            assert rendering is not None
            panel = draw_panels()["SCAIL2_PT_view3d_generate"]
            queued_at_once = len(session.scene_jobs(scene)) - jobs_before
            input_render._tick()
            temporary = [s.name for s in bpy.data.scenes if s.name.startswith("SCAIL2 export")]
            cancelled = bpy.ops.scail2.cancel_input_render()
            after_cancel = {
                "result": sorted(cancelled),
                "active": input_render.active() is not None,
                "temporary_scenes": [s.name for s in bpy.data.scenes if s.name.startswith("SCAIL2 export")],
                "queued": len(session.scene_jobs(scene)) - jobs_before,
                "driving_recorded": bool(json.load(open(inputs_json, encoding="utf-8")).get("driving"))
                if os.path.exists(inputs_json) else False,
            }
            assert bpy.ops.scail2.generate() == {'FINISHED'}
            # One frame a tick, however fast this machine renders 128x64: the counting is what is checked.
            budget, input_render.STEP_BUDGET_S = input_render.STEP_BUDGET_S, 0.0
            try:
                shown = render_inputs()
            finally:
                input_render.STEP_BUDGET_S = budget
            queued_job(scene, jobs_before)  # once the worker has checked the inputs
            queued = session.scene_jobs(scene)[jobs_before:]
            assert len(queued) == 1, queued
            pump(lambda: queued[0].finished)
            follow.tick()
            return {
                "returned_after": returned,
                "queued_at_once": queued_at_once,
                "panel": [entry for entry in panel if "Rendering" in str(entry) or "cancel_input_render" in str(entry)],
                "temporary_during": temporary,
                "after_cancel": after_cancel,
                "shown": shown,
                "status": queued[0].status,
                "strips": len(imported_strips(scene)) if scene.sequence_editor else 0,
                "history": len(scene.scail2_job.history),
            }
        finally:
            session.force_async = False
            show(SCENES["24"])

    @step
    def panels_draw():
        """Every SCAIL panel draws (through Blender's real layout calls) in both editors."""
        scene = SCENES["24"]
        show(scene)
        scene.sequence_editor.active_strip = imported_strips(scene)[-1]  # as an import leaves it
        return {name: [call[len("label:"):] for call in calls if call.startswith("label:")]
                for name, calls in draw_panels().items()}

    @step
    def history_survives_save_and_reload():
        scene = SCENES["24"]
        saved = [history_detail(item) for item in scene.scail2_job.history]
        path = os.path.join(WORK_DIR, "shot.blend")
        bpy.ops.wm.save_as_mainfile(filepath=path)
        bpy.ops.wm.open_mainfile(filepath=path)
        scene = bpy.data.scenes["Shot24"]
        SCENES["24"] = scene
        SCENES["30"] = bpy.data.scenes["Shot30"]
        loaded = [history_detail(item) for item in scene.scail2_job.history]
        return {"saved": saved, "loaded": loaded, "path": path}

    @step
    def import_again():
        scene = SCENES["24"]
        show(scene)
        before = len(imported_strips(scene))
        assert bpy.ops.scail2.history_import(index=0) == {'FINISHED'}
        strips = imported_strips(scene)
        return {"before": before, "after": len(strips), "newest": strip_detail(strips[-1])}

    @step
    def redo_same_settings():
        scene = SCENES["30"]
        show(scene)
        first = history_detail(scene.scail2_job.history[0])  # read now: adding to a collection moves its items
        assert bpy.ops.scail2.history_redo(index=0) == {'FINISHED'}
        again = scene.scail2_job.history[-1]
        return {"first": first, "again": history_detail(again), "history": len(scene.scail2_job.history)}

    @step
    def save_for_the_farm():
        """A shot with its inputs exported and settings made, saved for test_generate's farm run."""
        scene = SCENES["24"]
        show(scene)
        path = os.path.join(WORK_DIR, "farm.blend")
        bpy.ops.wm.save_as_mainfile(filepath=path)
        bpy.ops.wm.save_userpref()
        return {"path": path, "strips": len(imported_strips(scene))}

    @step
    def disable_stops_the_worker():
        session, follow = module(".runtime.session"), module(".runtime.follow")
        queue = session.get_queue(create=False)
        pid = queue.client.pid if queue is not None and queue.client is not None else None
        functions = [follow.tick]
        bpy.ops.preferences.addon_disable(module=PKG)
        alive = None
        if pid is not None:
            deadline = time.monotonic() + 10
            while True:
                try:
                    os.kill(pid, 0)
                    waited = os.waitpid(pid, os.WNOHANG)  # reap it if it was our child
                    alive = waited == (0, 0)
                except ChildProcessError:
                    alive = False
                except OSError:
                    alive = False
                if not alive or time.monotonic() > deadline:
                    break
                time.sleep(0.1)
        return {
            "pid": pid,
            "alive": alive,
            "timers": [fn.__name__ for fn in functions if bpy.app.timers.is_registered(fn)],
            "scail2_types": sorted(n for n in dir(bpy.types) if n.startswith("SCAIL2_")),
        }


with open(REPORT_PATH, "w", encoding="utf-8") as fh:
    json.dump(report, fh, indent=1)
