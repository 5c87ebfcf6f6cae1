"""The README's demo, inside Blender: two dancing mannequins animated into SCAIL-2 characters.

    BLENDER_USER_RESOURCES=build/demo/blender-user .venvs/blender/bin/python demo/blender_demo.py build/demo

Builds a scene in code (two mannequins made of primitives with a simple dance, a camera),
enables this checkout as the `scail2` extension, and then does what an artist does in the
SCAIL tab: assigns the mannequins to identities 1 and 2, exports the driving footage and
colour masks rendered by Blender, renders the reference, generates (the tiny profile, or
real weights when SCAIL2_WEIGHTS names them and a CUDA GPU is there), and imports the
result as an image strip and a camera plane. It saves the .blend and a contact sheet of
driving / mask / result frames, and prints where they are.
"""

from __future__ import annotations

import math
import os
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
ADDON = "bl_ext.user_default.scail2"
FPS = 24
FRAMES = (1, 48)  # two seconds
RESOLUTION = (256, 144)


def enable_addon():
    """This checkout as the extension `scail2` (a link in the user extension repository)."""
    import bpy

    repo = bpy.utils.user_resource("EXTENSIONS", path="user_default", create=True)
    link = os.path.join(repo, "scail2")
    if not os.path.exists(link):
        os.symlink(REPO, link)
    bpy.ops.preferences.addon_enable(module=ADDON)
    return sys.modules[ADDON]


def _part(collection, kind, name, size, location, parent, colour):
    import bpy

    mesh = bpy.data.meshes.new(name)
    obj = bpy.data.objects.new(name, mesh)
    collection.objects.link(obj)
    import bmesh

    bm = bmesh.new()
    if kind == "sphere":
        bmesh.ops.create_uvsphere(bm, u_segments=16, v_segments=8, radius=size[0])
    else:
        bmesh.ops.create_cone(bm, cap_ends=True, segments=12, radius1=size[0], radius2=size[0], depth=size[1])
    bm.to_mesh(mesh)
    bm.free()
    obj.location = location
    obj.parent = parent
    obj.color = colour
    return obj


def mannequin(scene, name, x, phase, colour):
    """A figure of primitives under an empty, with a dance keyed on the limbs; returns its collection."""
    import bpy

    collection = bpy.data.collections.new(name)
    scene.collection.children.link(collection)
    root = bpy.data.objects.new(name, None)
    collection.objects.link(root)
    root.location = (x, 0, 0)
    _part(collection, "cylinder", f"{name}.torso", (0.22, 0.9), (0, 0, 1.25), root, colour)
    _part(collection, "sphere", f"{name}.head", (0.17,), (0, 0, 1.9), root, colour)
    limbs = {}
    for side, sx in (("L", -1), ("R", 1)):
        limbs["arm" + side] = _part(collection, "cylinder", f"{name}.arm{side}", (0.07, 0.7),
                                    (0.32 * sx, 0, 1.35), root, colour)
        limbs["leg" + side] = _part(collection, "cylinder", f"{name}.leg{side}", (0.09, 0.9),
                                    (0.12 * sx, 0, 0.45), root, colour)
    for frame in range(FRAMES[0], FRAMES[1] + 1, 4):
        t = (frame - FRAMES[0]) / FPS
        swing = math.sin(2 * math.pi * 1.5 * t + phase)
        root.location.z = 0.08 * abs(swing)
        root.rotation_euler.z = 0.3 * swing
        root.keyframe_insert("location", frame=frame)
        root.keyframe_insert("rotation_euler", frame=frame)
        for side, sign in (("L", 1), ("R", -1)):
            limbs["arm" + side].rotation_euler.y = sign * (0.4 + 1.1 * (0.5 + 0.5 * swing))
            limbs["leg" + side].rotation_euler.x = 0.35 * swing * sign
            limbs["arm" + side].keyframe_insert("rotation_euler", frame=frame)
            limbs["leg" + side].keyframe_insert("rotation_euler", frame=frame)
    return collection


def build_scene():
    """The demo scene: two mannequins dancing in front of a camera, at 24 fps."""
    import bpy

    scene = bpy.data.scenes.new("SCAIL-2 demo")
    window = bpy.context.window_manager.windows[0]
    window.scene = scene
    if hasattr(window.workspace, "sequencer_scene"):
        window.workspace.sequencer_scene = scene
    scene.render.fps = FPS
    scene.frame_start, scene.frame_end = FRAMES
    scene.render.resolution_x, scene.render.resolution_y = RESOLUTION
    scene.world = bpy.data.worlds.new("World")
    scene.world.color = (0.35, 0.42, 0.55)
    scene.display.shading.color_type = 'OBJECT'
    dancers = [mannequin(scene, "Dancer1", -0.8, 0.0, (0.85, 0.55, 0.35, 1)),
               mannequin(scene, "Dancer2", 0.8, 1.7, (0.35, 0.6, 0.85, 1))]
    camera = bpy.data.objects.new("Camera", bpy.data.cameras.new("Camera"))
    scene.collection.objects.link(camera)
    camera.location = (0, -6.5, 1.2)
    camera.rotation_euler = (math.radians(90), 0, 0)
    scene.camera = camera
    return scene, camera, dancers


def configure(addon, out: str, weights: str | None) -> None:
    """Preferences as an artist sets them: backend Python, model, output folder."""
    import bpy

    prefs = bpy.context.preferences.addons[ADDON].preferences
    prefs.python_path = os.path.join(REPO, ".venvs", "backend", "bin", "python")
    prefs.output_dir = os.path.join(out, "output")
    if weights:
        prefs.model_source, prefs.weights_dir, prefs.device = 'WEIGHTS', weights, 'CUDA'
    else:
        prefs.model_source, prefs.device = 'TINY', 'CPU'


def set_up_job(scene, camera, dancers, out: str, weights: str | None) -> None:
    """The SCAIL tab's settings: identities, sources, and the job."""
    sources = scene.scail2_sources
    sources.mode = 'animate'
    sources.driving_source, sources.driving_camera, sources.engine = 'CAMERA', camera, 'WORKBENCH'
    sources.mask_source = 'IDENTITIES'
    sources.reference_source, sources.reference_camera = 'CAMERA', camera
    sources.reference_engine = 'WORKBENCH'
    sources.inputs_dir = os.path.join(out, "inputs")
    for identity, collection in enumerate(dancers, start=1):
        item = sources.identities.add()
        item.identity, item.target, item.collection = identity, 'COLLECTION', collection
    job = scene.scail2_job
    job.prompt = "two dancers on a stage"
    job.form = 'BOTH'
    job.camera, job.distance = camera, 5.0
    job.seed, job.use_seed_lock = 7, True
    if weights:
        job.preset = 'fast'
    else:  # the tiny profile at a small size: seconds on a CPU
        job.width, job.height = 224, 128
        job.use_custom_sampling = True
        job.steps = 4


def contact_sheet(scene, out: str, columns: int = 6) -> str:
    """Driving, mask and result rows at evenly spaced generated frames, as one PNG."""
    import json

    import bpy
    import numpy as np

    history = scene.scail2_job.history[-1]
    with open(history.manifest, encoding="utf-8") as f:
        manifest = json.load(f)
    frames = manifest["frames"]
    picks = [frames[round(i * (len(frames) - 1) / (columns - 1))] for i in range(columns)]
    height, width = manifest["size"]
    inputs = os.path.join(out, "inputs")
    rows = [
        [os.path.join(inputs, "driving", f"frame_{p['source_frame']:06d}.png") for p in picks],
        [os.path.join(inputs, "driving_mask", f"mask_{p['source_frame']:06d}.png") for p in picks],
        [os.path.join(history.job_dir, p["file"]) for p in picks],
    ]

    def pixels(path):
        image = bpy.data.images.load(path)
        image.scale(width, height)
        rgba = np.array(image.pixels[:], np.float32).reshape(height, width, 4)
        bpy.data.images.remove(image)
        return rgba

    # Blender's pixel rows run bottom-up: the last row of the stack is the top of the picture.
    sheet = np.concatenate([np.concatenate([pixels(p) for p in row], axis=1) for row in reversed(rows)], axis=0)
    image = bpy.data.images.new("contact sheet", sheet.shape[1], sheet.shape[0], alpha=True)
    image.pixels[:] = sheet.ravel()
    path = os.path.join(out, "contact_sheet.png")
    image.filepath_raw, image.file_format = path, 'PNG'
    image.save()
    return path


def main(out: str) -> int:
    import bpy

    out = os.path.abspath(out)
    weights = os.environ.get("SCAIL2_WEIGHTS") or None
    addon = enable_addon()
    configure(addon, out, weights)
    scene, camera, dancers = build_scene()
    set_up_job(scene, camera, dancers, out, weights)
    with bpy.context.temp_override(scene=scene):
        bpy.ops.scail2.preview_mask()  # the identity colours at the current frame, as the panel shows them
        # In background mode generate exports what is missing, runs the job to the end and imports it.
        result = bpy.ops.scail2.generate()
    if result != {'FINISHED'}:
        print("demo: generation failed", file=sys.stderr)
        return 1
    history = scene.scail2_job.history[-1]
    job = f"{history.job_dir} ({history.frames} frames, seed {history.seed})"
    blend = os.path.join(out, "demo.blend")
    bpy.ops.wm.save_as_mainfile(filepath=blend)
    sheet = contact_sheet(scene, out)
    bpy.ops.preferences.addon_disable(module=ADDON)  # stops the worker; bpy hangs at exit otherwise
    print(f"demo scene:    {blend}")
    print(f"job folder:    {job}")
    print(f"contact sheet: {sheet}")
    if not weights:
        print("note: the tiny test model has random weights: the generated frames are noise")
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(REPO, "build", "demo")))
