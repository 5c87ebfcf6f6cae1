"""The README's demo: a built-in dancing figure driven through the whole pipeline with the tiny profile.

It needs no files and no weights: it draws a 24 fps driving clip with its
colour mask and a reference still with alpha, generates (with real weights
when SCAIL2_WEIGHTS names them and a CUDA GPU is present), and writes a
contact sheet of driving / mask / result frames. Its folder holds only what it
writes: a folder with anything else is refused, and only the demo's own job is
removed before it generates afresh.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Callable
from pathlib import Path

import cv2
import numpy as np

import protocol

from ..errors import unusable_folder
from ..pipeline import durable, media, pixels
from ..pipeline.job_folder import MANIFEST_NAME, generated_files
from ..pipeline.masks import PALETTE

DEMO_FPS = 24.0
DEMO_SECONDS = 6.0  # 96 model frames: two overlapping segments
SIZE = (128, 224)  # small, so the tiny profile runs in seconds on a CPU
INPUT_NAMES = ("driving.mp4", "driving_mask.mp4", "reference.png")
SHEET_NAME = "contact_sheet.png"


def _skeleton(t: float, height: int, width: int) -> list[tuple[tuple[int, int], tuple[int, int]]]:
    """Limb segments of a figure dancing at time t (seconds)."""
    cx, hip_y = width / 2 + 0.15 * width * math.sin(t * 1.3), height * 0.62
    neck = (cx, height * 0.3)
    hip = (cx, hip_y)
    arm = 0.18 * height
    leg = 0.2 * height
    swing, step = math.sin(t * 4.0), math.sin(t * 3.0)
    hands = [(neck[0] - arm * math.cos(swing), neck[1] + arm * math.sin(swing)),
             (neck[0] + arm * math.cos(-swing), neck[1] - arm * math.sin(-swing))]
    feet = [(hip[0] - leg * 0.5 + 6 * step, hip_y + leg), (hip[0] + leg * 0.5 - 6 * step, hip_y + leg)]
    limbs = [(neck, hip)] + [(neck, h) for h in hands] + [(hip, f) for f in feet]
    return [((int(a[0]), int(a[1])), (int(b[0]), int(b[1]))) for a, b in limbs]


def _draw(limbs, height, width, colour, background, head_t) -> np.ndarray:
    frame = np.empty((height, width, 3), np.uint8)
    frame[...] = background
    for a, b in limbs:
        cv2.line(frame, a, b, colour, thickness=max(2, height // 24), lineType=cv2.LINE_AA)
    neck = limbs[0][0]
    cv2.circle(frame, (neck[0], neck[1] - height // 10), height // 12, colour, -1, cv2.LINE_AA)
    return frame


def write_demo_inputs(folder: Path) -> dict[str, Path]:
    """Driving clip, its colour mask (identity 1 on black) and an RGBA reference, in `folder`."""
    folder.mkdir(parents=True, exist_ok=True)
    height, width = 270, 480
    count = int(DEMO_SECONDS * DEMO_FPS)
    driving, mask = [], []
    for i in range(count):
        limbs = _skeleton(i / DEMO_FPS, height, width)
        driving.append(_draw(limbs, height, width, (230, 200, 170), (60, 90, 140), i))
        mask.append(_draw(limbs, height, width, PALETTE[0], (0, 0, 0), i))
    paths = {"driving": folder / "driving.mp4", "driving_mask": folder / "driving_mask.mp4",
             "reference": folder / "reference.png"}
    durable.write_preview_mp4(paths["driving"], np.stack(driving), DEMO_FPS)
    durable.write_preview_mp4(paths["driving_mask"], np.stack(mask), DEMO_FPS)
    figure = _draw(_skeleton(0.0, height, width), height, width, (200, 120, 60), (0, 0, 0), 0)
    alpha = (figure.max(axis=-1) > 0).astype(np.uint8) * 255
    durable.write_png_atomic(paths["reference"], np.dstack([figure, alpha]))
    return paths


def contact_sheet(manifest: dict, job_dir: Path, inputs: dict[str, Path], columns: int = 6) -> np.ndarray:
    """Rows: driving, mask, result, at `columns` evenly spaced output frames."""
    frames = manifest["frames"]
    picks = [frames[round(i * (len(frames) - 1) / (columns - 1))] for i in range(columns)]
    height, width = manifest["size"]
    rows = []
    for source in ("driving", "driving_mask"):
        info = media.probe_clip(str(inputs[source]))
        row = media.read_frames(info, [p["source_frame"] for p in picks])
        rows.append(pixels.resize_cover_crop(row, height, width))
    rows.append(np.stack([media.read_image(job_dir / p["file"])[0] for p in picks]))
    return np.concatenate([np.concatenate(list(r), axis=1) for r in rows], axis=0)


def run_demo(out: Path, run_command: Callable[[list[str]], int]) -> int:
    """Generate the demo into `out`; print where the results are.

    `run_command(argv)` runs one `python -m backend` command (the command line passes its own
    `main`): the demo is a `generate` command with made-up inputs.
    """
    out = Path(out)
    refusal = _foreign_content(out)
    if refusal:
        print(f"error: {out} {refusal}; choose an empty or new folder (nothing in it was changed)", file=sys.stderr)
        return 2
    inputs = write_demo_inputs(out / "inputs")
    weights = os.environ.get("SCAIL2_WEIGHTS")
    use_weights = bool(weights)
    if use_weights:
        import torch

        use_weights = torch.cuda.is_available()
    job_dir = out / "job"
    _remove_demo_job(job_dir)  # the demo always generates afresh
    model_args = ["--weights", weights, "--preset", "fast"] if use_weights else [
        "--model", "tiny", "--height", str(SIZE[0]), "--width", str(SIZE[1]), "--steps", "4", "--seed", "0"]
    status = run_command([
        "generate", "--driving", str(inputs["driving"]), "--driving-mask", str(inputs["driving_mask"]),
        "--reference", str(inputs["reference"]), "--mode", "animate", "--out", str(job_dir),
        "--prompt", "a dancer", *model_args,
    ])
    if status:
        return status
    manifest = protocol.read_json_file(job_dir / MANIFEST_NAME, "manifest")
    sheet = out / "contact_sheet.png"
    durable.write_png_atomic(sheet, contact_sheet(manifest, job_dir, inputs))
    print(f"demo inputs:   {out / 'inputs'}")
    print(f"job directory: {job_dir} ({len(manifest['frames'])} frames, {len(manifest['segments'])} segments)")
    print(f"contact sheet: {sheet}")
    return 0


def _foreign_content(out: Path) -> str | None:
    """Why `out` is no folder for the demo (it holds something the demo did not write), or None."""
    problem = unusable_folder(out)
    if problem or not out.exists():
        return problem
    allowed = {"inputs": INPUT_NAMES, "job": None, SHEET_NAME: None}
    for entry in out.iterdir():
        if entry.name not in allowed and not durable.TEMP_NAME.fullmatch(entry.name):
            return f"holds {entry.name}, which the demo did not write"
    inputs = out / "inputs"
    if inputs.is_dir() and any(p.name not in INPUT_NAMES and not durable.TEMP_NAME.fullmatch(p.name)
                               for p in inputs.iterdir()):
        return "holds inputs/ files the demo did not write"
    job = out / "job"
    if job.exists() and (not job.is_dir() or any(job.iterdir())):
        if not _is_demo_job(job, inputs):
            return "holds a job/ folder that is not the demo's"
        others = generated_files(job)[1]
        if others:
            return f"holds job/{others[0]}, which the demo did not write"
    return None


def _is_demo_job(job: Path, inputs: Path) -> bool:
    try:
        manifest = protocol.read_json_file(job / MANIFEST_NAME)
        return manifest["job"]["driving"] == str(inputs / "driving.mp4")
    except (protocol.ProtocolError, KeyError, TypeError):
        return False


def _remove_demo_job(job: Path) -> None:
    """The files an earlier demo's generation wrote, then their folders once empty (anything else is left)."""
    ours, _others = generated_files(job)
    for path in ours:
        try:
            path.unlink()
        except FileNotFoundError:
            pass
    for folder in sorted({path.parent for path in ours} | {job}, key=lambda p: len(p.parts), reverse=True):
        try:
            folder.rmdir()
        except OSError:
            pass  # missing, or holding what someone else wrote
