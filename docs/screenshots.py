"""The README's screenshots, taken in a real Blender window: docs/images/{view3d_tab,extra_views,sequencer_tab,
job_running,result_strip,result_plane,review_wipe,review_side_by_side,input_checks,
shared_worker}.png.

    python3 docs/screenshots.py     # as root with the Debian chroot of README.md, or BLENDER=... / blender on PATH
    python3 docs/screenshots.py shared_worker   # only the steps named (after the shot's set-up)

Finds Blender as `make test-blender52` does, installs this checkout as an extension in a scratch user folder
(nothing of the developer's preferences shows), then starts Blender's interface under ``xvfb-run`` (software
OpenGL) with `docs/screenshot_recipe.py` as its ``--python`` script. Inside Blender a timer does what an artist does: the footage in
the sequencer, the reference, the SCAIL tab; Generate with the test model (the frames are noise); the result as a
strip and as a plane in front of the camera, screenshotting the window at each stage. Background mode cannot
screenshot, so this needs the interface. Back outside, the backend's Python (Pillow) crops each picture to the
area it is about and stores it as a small palette PNG.
"""

import json
import os
import subprocess
import sys

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
WORK = os.path.join(REPO, "build", "screenshots")
IMAGES = os.path.join(REPO, "docs", "images")
WINDOW = (1600, 1000)


# --- Outside: find and start Blender, then crop the pictures.

CROP = """
import json, os, struct, sys
import numpy as np
from PIL import Image

def read_xwd(path):  # a 24-bit TrueColor ZPixmap, as Xvfb writes it: BGRX pixels
    data = open(path, "rb").read()
    f = struct.unpack(">25I", data[:100])
    header, width, height, bytes_per_line, ncolors = f[0], f[4], f[5], f[12], f[19]
    start = header + ncolors * 12
    rows = np.frombuffer(data[start:start + bytes_per_line * height], np.uint8).reshape(height, bytes_per_line)
    return Image.fromarray(rows[:, :width * 4].reshape(height, width, 4)[:, :, 2::-1].copy())

shots = json.load(open(sys.argv[1]))["shots"]
for name, shot in shots.items():
    image = Image.open(shot["path"]).convert("RGB")
    source = "screen.screenshot"
    if image.getextrema() == ((0, 0), (0, 0), (0, 0)) and shot.get("xwd"):
        image, source = read_xwd(shot["xwd"]), "xwd"
    x, y, w, h = shot["crop"]
    top = image.height - (y + h)
    part = image.crop((x, top, x + w, top + h)).quantize(colors=256, method=Image.Quantize.MEDIANCUT)
    out = os.path.join(sys.argv[2], name + ".png")
    part.save(out, optimize=True)
    print("{:s}: {:d}x{:d}, {:d} KB (from {:s})".format(out, w, h, os.path.getsize(out) // 1024, source))
"""


def crop_all(shots_path):
    """Crop each raw screenshot to its rectangle and save it as a palette PNG (the backend's Pillow)."""
    python = os.path.join(REPO, ".venvs", "backend", "bin", "python")
    return subprocess.run([python, "-c", CROP, shots_path, IMAGES]).returncode


def main():
    sys.path.insert(0, os.path.join(REPO, "tests", "blender52"))
    import run  # the Blender finder of `make test-blender52`

    user = os.path.join(WORK, "blender-user")
    env = run.scratch_env(user)
    variables = {"BLENDER_USER_RESOURCES": user, "LIBGL_ALWAYS_SOFTWARE": "1"}
    env.update(variables)
    screen = "-screen 0 {:d}x{:d}x24".format(*WINDOW)
    found = run.find_blender(variables, ("xvfb-run", "-a", "-s", screen))
    if found is None:
        print("screenshots: no Blender >= 4.5 found ($BLENDER, `blender` on PATH or a chroot at $SCAIL2_CHROOT)")
        return 1
    command, version, where = found
    print("Blender {:s} ({:s})".format(".".join(map(str, version)), where))
    plain = run.find_blender(variables)[0]  # the same Blender without the display, for the extension commands
    if not run.install_extension(plain, env, WORK):
        return 1
    # No splash screen over the window (the scratch preferences show Quick Setup otherwise).
    run.run_step(plain, ["-b", "--python-expr", "import bpy; bpy.context.preferences.view.show_splash = False; "
                         "bpy.ops.wm.save_userpref()"], env, "preferences without splash")
    config = os.path.join(WORK, "config.json")
    with open(config, "w", encoding="utf-8") as fh:
        json.dump({"backend_python": run.BACKEND_PYTHON, "footage": run.FOOTAGE, "reference": run.REFERENCE,
                   "footage2": os.path.join(os.path.dirname(run.FOOTAGE), "scail_002_driving.mp4"),
                   "work": WORK, "only": sys.argv[1:]}, fh)
    # --enable-event-simulate: the script flips the sidebar tabs with simulated Ctrl+Wheel events.
    geometry = ["--window-geometry", "0", "0", str(WINDOW[0]), str(WINDOW[1]), "--enable-event-simulate"]
    recipe = os.path.join(os.path.dirname(os.path.abspath(__file__)), "screenshot_recipe.py")
    run.run_step(command, [*geometry, "--python", recipe, "--", config], env,
                 "Blender interface", timeout=900)
    shots_path = os.path.join(WORK, "shots.json")
    if not os.path.isfile(shots_path):
        print("screenshots: Blender wrote no shots.json")
        return 1
    with open(shots_path, encoding="utf-8") as fh:
        outcome = json.load(fh)
    if outcome.get("error"):
        print("screenshots: failed in Blender:\n" + outcome["error"])
    return crop_all(shots_path) or (1 if outcome.get("error") else 0)


if __name__ == "__main__":
    sys.exit(main())
