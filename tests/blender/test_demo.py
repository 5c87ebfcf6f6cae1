"""The README's demo runs end to end and produces its files (a real worker, the tiny model)."""

from __future__ import annotations

import json
import os
import struct
import subprocess
import sys

import blender_testing

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
CHECK_BLEND = r"""
import bpy, json, sys
bpy.ops.wm.open_mainfile(filepath=sys.argv[-2])
scene = bpy.data.scenes["SCAIL-2 demo"]
strips = [s for s in scene.sequence_editor.strips if s.type == "IMAGE"]
planes = [o for o in scene.objects if o.parent is not None and o.parent.type == "CAMERA"]
preview = bpy.data.images.load(sys.argv[-3])
px = preview.pixels[:]
colours = {tuple(round(c) for c in px[i:i + 3]) for i in range(0, len(px), 4)}
json.dump({"strips": len(strips), "planes": len(planes), "preview_colours": sorted(colours)},
          open(sys.argv[-1], "w"))
"""


def png_size(path):
    with open(path, "rb") as f:
        header = f.read(24)
    assert header[:8] == b"\x89PNG\r\n\x1a\n"
    return struct.unpack(">II", header[16:24])


def test_demo_makes_a_scene_a_job_and_a_contact_sheet(tmp_path):
    out = tmp_path / "demo"
    env = blender_testing.isolated_blender_env(str(tmp_path / "user"))
    run = subprocess.run([sys.executable, os.path.join(REPO, "demo", "blender_demo.py"), str(out)],
                         env=env, cwd=str(tmp_path), capture_output=True, text=True, timeout=600)
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-3000:]
    assert "contact sheet:" in run.stdout and "noise" in run.stdout
    # Background mode's log: one line per change of phase, each with one prefix.
    status = [line for line in run.stdout.splitlines() if line.startswith("SCAIL-2")]
    assert any("finished and was imported" in line for line in status), status
    assert not any(line.startswith("SCAIL-2: SCAIL-2") for line in status), status
    assert all(a != b for a, b in zip(status, status[1:])), status

    (job_dir,) = (out / "output" / "jobs").iterdir()
    manifest = json.loads((job_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and len(manifest["frames"]) == 32  # 48 frames at 24 fps -> 2 s at 16 fps
    assert all((job_dir / f["file"]).is_file() for f in manifest["frames"])
    assert len(list((out / "inputs" / "driving_mask").glob("*.png"))) == 48
    width, height = png_size(out / "contact_sheet.png")
    assert (width, height) == (6 * 224, 3 * 128)

    report = tmp_path / "blend.json"
    preview = out / "inputs" / "mask_preview.png"
    check = subprocess.run([sys.executable, "-c", CHECK_BLEND, str(preview), str(out / "demo.blend"), str(report)],
                           env=env, capture_output=True, text=True, timeout=300)
    assert check.returncode == 0, check.stderr[-2000:]
    blend = json.loads(report.read_text())
    assert blend["strips"] == 1 and blend["planes"] == 1  # imported as strip and as camera plane
    # The mask preview: identity 1 blue and 2 red on the animation mode's black, nothing else.
    assert [tuple(c) for c in blend["preview_colours"]] == [(0, 0, 0), (0, 0, 1), (1, 0, 0)]
