"""The artist's steps of `docs/screenshots.py`, run inside Blender's interface (its ``--python`` script, with the
launcher's config file after ``--``): each step followed by a screenshot of the window, the rectangle to keep
written to ``shots.json`` for the launcher to crop. A timer drives it, as an artist's clicks would.
"""

import json
import math
import os
import shutil
import subprocess
import sys

OUTPUT = "/tmp/scail2"  # the worker's output folder: short, as an artist's would be
PANEL_HEADER_PITCH = 28  # pixels from one collapsed sidebar panel's header to the next (interface scale 1)
PANEL_TOP_MARGIN = 4  # pixels above the top panel's header


def in_blender(config_path):
    import bpy

    with open(config_path, encoding="utf-8") as fh:
        config = json.load(fh)
    pkg = "bl_ext.user_default.scail2"
    shots = {}

    def main_area():
        return max(bpy.context.window_manager.windows[0].screen.areas, key=lambda a: a.width * a.height)

    def sidebar(area, show=True):
        area.spaces.active.show_region_ui = show
        return next(r for r in area.regions if r.type == 'UI')

    def shoot(name, area, crop):
        """Screenshot the whole window; remember the rectangle to keep (window pixels, origin bottom left).

        Under Xvfb with Mesa's software OpenGL, Blender reads its front buffer back as black: then the X server's
        own picture of the screen (``xwd``, taken at the same moment) is used instead.
        """
        window = bpy.context.window_manager.windows[0]
        path = os.path.join(config["work"], "raw_" + name + ".png")
        with bpy.context.temp_override(window=window, area=area):
            bpy.ops.screen.screenshot(filepath=path)
        shots[name] = {"path": path, "crop": crop, "window": [window.width, window.height]}
        if os.environ.get("DISPLAY") and shutil.which("xwd"):
            shots[name]["xwd"] = path[:-4] + ".xwd"
            subprocess.run(["xwd", "-root", "-silent", "-out", shots[name]["xwd"]], check=True, timeout=60)

    def show_tab(region, category="SCAIL"):
        """Click down the sidebar's tab strip until ``category`` is shown (it is read-only in Python)."""
        window = bpy.context.window_manager.windows[0]
        x = region.x + region.width - 9  # the tabs stand along the sidebar's outer edge
        for y in range(region.y + region.height - 30, region.y, -12):
            if region.active_panel_category == category:
                return
            window.event_simulate(type='MOUSEMOVE', value='NOTHING', x=x, y=y)
            window.event_simulate(type='LEFTMOUSE', value='PRESS', x=x, y=y)
            window.event_simulate(type='LEFTMOUSE', value='RELEASE', x=x, y=y)
            yield 0.2
        raise RuntimeError("no {:s} tab in the sidebar: {!r}".format(category, region.active_panel_category))

    def widen(region, pixels):
        """Drag the sidebar's edge ``pixels`` wider, as an artist does, so no label is cut short."""
        window = bpy.context.window_manager.windows[0]
        x, y = region.x + 1, region.y + region.height // 2
        window.event_simulate(type='MOUSEMOVE', value='NOTHING', x=x, y=y)
        yield 0.2
        window.event_simulate(type='LEFTMOUSE', value='PRESS', x=x, y=y)
        yield 0.2
        for step in range(1, 6):  # one event at a time: the drag follows the mouse as it is handled
            window.event_simulate(type='MOUSEMOVE', value='NOTHING', x=x - pixels * step // 5, y=y)
            yield 0.1
        window.event_simulate(type='LEFTMOUSE', value='RELEASE', x=x - pixels, y=y)
        yield 0.5

    def scroll_down(region, clicks=30):
        """Wheel down over the sidebar (up for negative ``clicks``): the Generate panel's progress and the
        History come into view."""
        window = bpy.context.window_manager.windows[0]
        x, y = region.x + region.width // 3, region.y + region.height // 2
        window.event_simulate(type='MOUSEMOVE', value='NOTHING', x=x, y=y)
        for _ in range(abs(clicks)):  # negative: back up
            window.event_simulate(type='WHEELDOWNMOUSE' if clicks > 0 else 'WHEELUPMOUSE', value='PRESS', x=x, y=y)
        # Off the sidebar: left over a button the scroll brought under it, the mouse shows its tooltip in the picture.
        window.event_simulate(type='MOUSEMOVE', value='NOTHING', x=max(region.x - 40, 1), y=y)
        yield 0.5

    def open_panel(region, idname):
        """Open the sidebar panel ``idname`` (one closed by default) as an artist does, by clicking its header:
        every panel is collapsed first (Ctrl+click on the top one, then a click that shuts it too), then the
        headers are clicked from the top until that panel draws its body (a closed panel never does); another
        one opened on the way is clicked shut again. Panels have no open state in Python to set instead."""
        window = bpy.context.window_manager.windows[0]
        panels = [cls for cls in sys.modules[pkg + ".panels"].classes if getattr(cls, "bl_space_type", "")
                  == area_of(region).type and not getattr(cls, "bl_parent_id", "")]
        drawn = []

        def recording(cls, draw):
            def draw_recorded(self, context):
                drawn.append(cls.__name__)
                draw(self, context)
            return draw_recorded

        originals = {cls: cls.draw for cls in panels}
        for cls in panels:
            cls.draw = recording(cls, cls.draw)

        def click(y, ctrl=False):
            x = region.x + 40  # on the header's title, left of its drag handle
            window.event_simulate(type='MOUSEMOVE', value='NOTHING', x=x, y=y)
            window.event_simulate(type='LEFTMOUSE', value='PRESS', x=x, y=y, ctrl=ctrl)
            window.event_simulate(type='LEFTMOUSE', value='RELEASE', x=x, y=y, ctrl=ctrl)

        try:
            yield from scroll_down(region, clicks=-200)
            top = region.y + region.height - PANEL_TOP_MARGIN
            first = top - PANEL_HEADER_PITCH // 2
            click(first, ctrl=True)  # the top panel alone open...
            yield 0.5
            click(first)  # ...and shut
            yield 0.5
            drawn.clear()
            yield 0.5
            if drawn:
                raise RuntimeError("panels still open after collapsing them all: {!r}".format(sorted(set(drawn))))
            for k in range(len(panels)):
                y = first - k * PANEL_HEADER_PITCH
                drawn.clear()
                click(y)
                yield 0.5
                if idname in drawn:
                    return
                if drawn:
                    click(y)  # another panel opened: shut it again
                    yield 0.5
            raise RuntimeError("no header of {:s} found in the sidebar".format(idname))
        finally:
            for cls, draw in originals.items():
                cls.draw = draw

    def area_of(region):
        return next(area for area in bpy.context.window_manager.windows[0].screen.areas
                    if any(r.as_pointer() == region.as_pointer() for r in area.regions))

    def rect(item):
        return [item.x, item.y, item.width, item.height]

    def set_up_shot():
        """Short paths, as on an artist's machine (the backend environment and the shot's files under OUTPUT,
        a fresh folder each time: an earlier run's inputs would show as stale exports); the footage as a movie
        strip, a reference image, a small job brought back as a strip and a plane. Returns the scene."""
        marker = os.path.join(OUTPUT, ".made-by-docs-screenshots")
        if os.path.exists(OUTPUT) and not os.path.exists(marker):
            raise RuntimeError(OUTPUT + " exists and was not made by docs/screenshots.py: move it away")
        shutil.rmtree(OUTPUT, ignore_errors=True)
        shot, backend = os.path.join(OUTPUT, "shot"), os.path.join(OUTPUT, "backend")
        os.makedirs(shot)
        open(marker, "w").close()
        os.symlink(os.path.realpath(os.path.dirname(os.path.dirname(config["backend_python"]))), backend)
        footage, reference = os.path.join(shot, "dance.mp4"), os.path.join(shot, "dancer.jpg")
        shutil.copyfile(config["footage"], footage)
        shutil.copyfile(config["reference"], reference)
        prefs = bpy.context.preferences.addons[pkg].preferences
        prefs.python_path = os.path.join(backend, "bin", "python")
        prefs.model_source, prefs.device, prefs.output_dir = 'TINY', 'CPU', OUTPUT

        scene = bpy.context.scene
        scene.render.fps, scene.render.fps_base = 24, 1.0
        scene.render.resolution_x, scene.render.resolution_y = 1280, 720
        scene.frame_start, scene.frame_end = 1, 48
        window = bpy.context.window_manager.windows[0]
        if hasattr(window.workspace, "sequencer_scene"):
            window.workspace.sequencer_scene = scene
        editor = scene.sequence_editor_create()
        editor.active_strip = editor.strips.new_movie("dance.mp4", footage, 1, 1, fit_method='FIT')
        sources = scene.scail2_sources
        sources.driving_source, sources.mask_source = 'STRIP', 'NONE'
        sources.reference_source, sources.reference_file = 'FILE', reference
        job = scene.scail2_job
        job.prompt = "a dancer on a stage"
        job.width, job.height = 224, 128
        job.use_custom_sampling = True  # first: turning it on starts the values at the preset's
        job.steps = 3
        job.use_frame_range = True
        job.frame_start, job.frame_end = 1, 16
        job.form, job.camera, job.distance = 'BOTH', scene.camera, 5.0
        scene.frame_current = 12
        return scene

    def view3d_tab(area):
        region = sidebar(area)
        yield 0.5
        yield from widen(region, 90)
        yield from show_tab(region)
        yield 1.0
        shoot("view3d_tab", area, rect(region))

    def extra_views_panel(area, scene):
        """The Extra Views sub-panel: a view from a file and a turnaround of the startup cube (identity 1), rendered
        from the timer as an artist's button press does, then the sidebar scrolled to the list."""
        cube = bpy.data.objects.get("Cube")
        sys.modules[pkg + ".props.input_settings"].assign_identity(scene.scail2_sources.identities, [('OBJECT', cube)], 1)
        extra = scene.scail2_extra_views
        view = extra.views.add()
        view.source, view.file = 'FILE', scene.scail2_sources.reference_file
        extra.turnaround_object, extra.turnaround_angles = cube, "45 90 180"
        with bpy.context.temp_override(window=bpy.context.window_manager.windows[0], area=area):
            bpy.ops.scail2.render_turnaround()
        input_render = sys.modules[pkg + ".runtime.input_render"]
        while input_render.active() is not None:
            yield 0.2
        extra.active_index = 3
        region = sidebar(area)
        yield from scroll_down(region, clicks=14)
        yield 1.0
        shoot("extra_views", area, rect(region))
        yield from scroll_down(region, clicks=-30)

    def sequencer_tab(area):
        area.type = 'SEQUENCE_EDITOR'
        area.spaces.active.view_type = 'SEQUENCER_PREVIEW'
        region = sidebar(area)
        yield 0.5
        yield from show_tab(region)
        window = bpy.context.window_manager.windows[0]
        with bpy.context.temp_override(window=window, area=area,
                                       region=next(r for r in area.regions if r.type == 'WINDOW')):
            bpy.ops.sequencer.view_all()
        yield 1.5
        shoot("sequencer_tab", area, rect(area))

    def job_running_then_strip(area, scene):
        """Generate; the sidebar scrolled to the Generate panel while the worker denoises (progress and the time
        left), then the imported strip above the footage."""
        region = sidebar(area)
        scene.scail2_job.steps = 30  # long enough to be caught denoising, with the time left (the other takes: 3)
        with bpy.context.temp_override(window=bpy.context.window_manager.windows[0], area=area):
            bpy.ops.scail2.generate()
        input_render, session = sys.modules[pkg + ".runtime.input_render"], sys.modules[pkg + ".runtime.session"]
        while input_render.active() is not None:  # the job's first phase: its inputs rendered by Blender
            yield 0.2
        while not session.scene_jobs(scene):  # then the worker checks the inputs before the job is queued
            yield 0.2
        job = session.scene_jobs(scene)[-1]
        while not (job.status == "running" and job.phase == "sample" and job.eta_s is not None and job.step >= 8):
            if job.finished:
                raise RuntimeError("the job ended before it was caught denoising")
            yield 0.5
        yield from scroll_down(region, clicks=200)  # to the end, now that the progress lines are drawn
        shoot("job_running", area, rect(region))
        history = scene.scail2_job.history
        while not (history and history[-1].status == 'IMPORTED'):
            if job.status == "failed":
                raise RuntimeError(job.error.message)
            yield 1.0
        yield 4.0  # the strip's thumbnails are drawn in the background
        shoot("result_strip", area, rect(area))
        scene.scail2_job.steps = 3

    def result_plane(area, scene):
        """From beside the camera, in Solid shading showing textures: the plane in front of it, the cube behind
        (the view's centre nearer the cube, so the camera, the plane and the cube stand left of the sidebar)."""
        from mathutils import Euler

        area.type = 'VIEW_3D'
        space = area.spaces.active
        space.shading.type, space.shading.color_type = 'SOLID', 'TEXTURE'
        camera = scene.camera.matrix_world.translation
        view = space.region_3d
        view.view_perspective = 'PERSP'
        view.view_location = camera * 0.3
        view.view_rotation = Euler((math.radians(70), 0.0, math.radians(95))).to_quaternion()
        view.view_distance = 14.0
        yield from show_tab(sidebar(area))
        yield 2.0
        shoot("result_plane", area, rect(area))

    def review_takes(area, scene):
        """Two more takes of the shot (a seed wedge); v001 approved, a note on a frame, v001 compared with the driving
        footage as an A/B wipe and side by side, the Review panel beside them."""
        window = bpy.context.window_manager.windows[0]
        job = scene.scail2_job
        job.wedge_kind, job.wedge_count = 'SEED', 2
        area.type = 'SEQUENCE_EDITOR'
        area.spaces.active.view_type = 'SEQUENCER_PREVIEW'
        with bpy.context.temp_override(window=window, area=area):
            bpy.ops.scail2.wedge()
        history = job.history
        while len(history) < 3 or any(take.status not in {'IMPORTED', 'DONE'} for take in history):
            yield 1.0
        history[1].rating, history[2].take_status = 3, 'REJECTED'
        history[1].name = "softer hands"
        with bpy.context.temp_override(window=window, area=area):
            bpy.ops.scail2.take_approve(index=0)
            scene.frame_set(9)
            bpy.ops.scail2.take_add_note(index=0, text="left hand smears")
            job.compare_with = 'DRIVING'
            bpy.ops.scail2.compare(index=0)
        job.active_history_index = 0
        scene.frame_set(6)
        region = sidebar(area)
        yield from show_tab(region)
        yield from scroll_down(region, clicks=60)
        with bpy.context.temp_override(window=window, area=area,
                                       region=next(r for r in area.regions if r.type == 'WINDOW')):
            bpy.ops.sequencer.view_all()
        yield 4.0
        shoot("review_wipe", area, rect(area))
        with bpy.context.temp_override(window=window, area=area):
            bpy.ops.scail2.compare_toggle()
        yield 3.0
        shoot("review_side_by_side", area, rect(area))
    def input_checks(area, scene):
        """A second shot cut in at scene frame 9 and the sequencer output as the driving footage: Check Inputs
        shows the cut failing in the Inputs panel's checklist and as a "check: cut" marker on the timeline."""
        area.type = 'SEQUENCE_EDITOR'
        area.spaces.active.view_type = 'SEQUENCER'
        editor = scene.sequence_editor
        for strip in editor.strips:  # the imported result off: the sequencer output is the two shots alone
            strip.mute = strip.name != "dance.mp4"
        editor.strips.new_movie("stage.mp4", config["footage2"], 4, 9, fit_method='FIT')
        scene.frame_end = 16
        scene.scail2_sources.driving_source = 'SEQUENCER'
        region = sidebar(area)
        yield 0.5
        yield from show_tab(region)
        window = bpy.context.window_manager.windows[0]
        with bpy.context.temp_override(window=window, area=area):
            bpy.ops.scail2.check_inputs()
        input_render = sys.modules[pkg + ".runtime.input_render"]
        while input_render.active() is not None or not scene.scail2_sources.input_checks:
            yield 0.5
        with bpy.context.temp_override(window=window, area=area,
                                       region=next(r for r in area.regions if r.type == 'WINDOW')):
            bpy.ops.anim.scene_range_frame()
        yield from scroll_down(region, clicks=-40)  # back to the top: the Inputs panel and its checklist
        yield from scroll_down(region, clicks=6)
        yield 1.5
        shoot("input_checks", area, rect(area))

    def shared_worker(area, scene):
        """A worker two artists share (alice and ben, each with a token of their own) and Blender signed in as
        their lead, an admin: the Queue panel's "On the worker" list shows every artist's jobs with their names
        and places in the turn order, each with its cancel button."""
        import re
        import subprocess as sp
        import threading

        core_queue, core_job = sys.modules[pkg + ".core.queue"], sys.modules[pkg + ".core.job"]
        protocol = sys.modules[pkg + ".protocol"]
        backend_dir = os.path.dirname(sys.modules[pkg].__file__)
        python, tokens = config["backend_python"], os.path.join(OUTPUT, "worker-tokens")

        def token(*args):
            return sp.run([python, "-m", "backend", "tokens", "--file", tokens, "add", *args], cwd=backend_dir,
                          check=True, capture_output=True, text=True, timeout=120).stdout.strip()

        alice_token, ben_token, lead_token = token("alice"), token("ben"), token("lead", "--admin")
        worker = sp.Popen([python, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu", "--jobs-root",
                           os.path.join(OUTPUT, "shared_jobs"), "--listen", "127.0.0.1:0", "--tokens", tokens],
                          cwd=backend_dir, stdin=sp.DEVNULL, stdout=sp.DEVNULL, stderr=sp.PIPE, text=True)
        artists = []
        try:
            port = None
            for line in worker.stderr:
                found = re.search(r"listening on 127\.0\.0\.1:(\d+)", line)
                if found:
                    port = int(found.group(1))
                    break
            if port is None:
                raise RuntimeError("the shared worker did not start")
            threading.Thread(target=worker.stderr.read, daemon=True).start()  # its log, read so it never blocks

            def take(seed, steps=4):
                return protocol.JobSpec(driving=config["footage"], reference=config["reference"], height=64, width=128,
                                        steps=steps, seed=seed, frame_end=5)

            for name, artist_token, specs in (("alice", alice_token, [take(1, steps=5000), take(2), take(3)]),
                                               ("ben", ben_token, [take(4), take(5)])):
                artist = core_queue.JobQueue(core_job.RemoteWorker("127.0.0.1", port, artist_token),
                                             os.path.join(OUTPUT, name))
                artists.append((artist, [artist.submit(spec) for spec in specs]))
            while not all(job.status in ("queued", "running") for _artist, submitted in artists for job in submitted):
                for artist, _submitted in artists:
                    artist.poll()
                yield 0.2
            prefs = bpy.context.preferences.addons[pkg].preferences
            prefs.worker_location, prefs.remote_address = 'REMOTE', "127.0.0.1:{:d}".format(port)
            prefs.remote_token = lead_token
            window = bpy.context.window_manager.windows[0]
            area.type = 'VIEW_3D'
            region = sidebar(area)
            yield from show_tab(region)
            with bpy.context.temp_override(window=window, area=area):
                bpy.ops.scail2.list_worker_jobs()
            queue = sys.modules[pkg + ".runtime.session"].get_queue(create=False)
            while queue.listing_worker_jobs or not queue.signed_in_as():
                yield 0.2
            yield from open_panel(region, "SCAIL2_PT_view3d_queue")
            yield 1.5
            shoot("shared_worker", area, rect(region))
        finally:
            for artist, _submitted in artists:
                artist.shutdown()
            worker.terminate()
            worker.wait(60)

    def steps():
        """The recipe; each step yields the seconds to wait for Blender to draw. ``config["only"]``: the names of
        the steps to take (the window and the shot are always set up first), all of them when empty."""
        yield 2.0  # 1. the window has drawn once
        scene = set_up_shot()  # 2. the shot
        area = main_area()
        recipe = (
            ("view3d_tab", lambda: view3d_tab(area)),  # 3. the SCAIL tab in the 3D viewport
            ("extra_views", lambda: extra_views_panel(area, scene)),  # 3b. Extra Views: a file, a turnaround
            ("sequencer_tab", lambda: sequencer_tab(area)),  # 4. the same area as the sequencer with its preview
            ("job_running", lambda: job_running_then_strip(area, scene)),  # 5. Generate: the job running, the strip
            ("result_plane", lambda: result_plane(area, scene)),  # 6. back to the 3D viewport: the plane
            ("review", lambda: review_takes(area, scene)),  # 7. more takes, reviewed: approve, a note, a compare
            ("input_checks", lambda: input_checks(area, scene)),  # 8. a cut in the sequencer output: Check Inputs
            ("shared_worker", lambda: shared_worker(area, scene)),  # 9. a worker artists share, as their lead sees it
        )
        unknown = set(config.get("only") or ()) - {name for name, _step in recipe}
        if unknown:
            raise RuntimeError("no such step: {:s}".format(", ".join(sorted(unknown))))
        for name, step in recipe:
            if not config.get("only") or name in config["only"]:
                yield from step()

    recipe = steps()

    def timer():
        try:
            return next(recipe)
        except StopIteration:
            outcome = {"shots": shots}
        except Exception as ex:  # noqa: BLE001  (written down for the launcher, then Blender quits)
            import traceback
            outcome = {"shots": shots, "error": "".join(traceback.format_exception(ex))}
        with open(os.path.join(config["work"], "shots.json"), "w", encoding="utf-8") as fh:
            json.dump(outcome, fh, indent=1)
        bpy.ops.preferences.addon_disable(module=pkg)  # stops the worker
        bpy.ops.wm.quit_blender()
        return None

    bpy.app.timers.register(timer, first_interval=1.0)


if __name__ == "__main__":
    in_blender(sys.argv[sys.argv.index("--") + 1])
