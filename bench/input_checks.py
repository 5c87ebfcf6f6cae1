"""Input checks speed: the whole checklist (cuts, camera, blur, subjects with a driving mask, reference framing,
timing) for 81 frames at 512p and 300 frames of 1080p, against the 5 s target for 81 frames at 512p.

    .venvs/backend/bin/python bench/input_checks.py                  # both cases, 3 runs each, medians
    .venvs/backend/bin/python bench/input_checks.py --cases 512p --repeats 1

The clips are the real fixture footage scaled to the size and looped to the length (an mp4, as footage comes),
with a PNG mask sequence of one moving subject and a reference mask. `prepare_s` is what `generate` has
already done when it runs the checks (the files read, the reference scaled); `checks_s` is the checklist
itself (`run_checks`), `total_s` both, as `check-inputs` pays them. Prints one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.input_checks.run import run_checks  # noqa: E402
from backend.pipeline.inputs import prepare_inputs  # noqa: E402
from protocol import PALETTE, JobSpec  # noqa: E402

FOOTAGE = REPO / "tests" / "fixtures" / "footage"
TARGET_S = 5.0  # for 81 frames at 512p: cheap enough to run before every job
CASES = {"512p": (81, 896, 512), "1080p": (300, 1920, 1080)}  # frames, width, height


def make_case(folder: Path, frames: int, width: int, height: int) -> JobSpec:
    source = cv2.VideoCapture(str(FOOTAGE / "scail_001_driving.mp4"))
    clip = []
    while True:
        ok, frame = source.read()
        if not ok:
            break
        clip.append(cv2.resize(frame, (width, height), interpolation=cv2.INTER_AREA))
    writer = cv2.VideoWriter(str(folder / "driving.mp4"), cv2.VideoWriter_fourcc(*"mp4v"), 16.0, (width, height))
    (folder / "masks").mkdir()
    for k in range(frames):
        writer.write(clip[k % len(clip)])
        mask = np.zeros((height, width, 3), np.uint8)
        x = int(width * (0.3 + 0.2 * np.sin(k / 10)))
        mask[int(height * 0.15):int(height * 0.95), x:x + width // 6] = PALETTE[0][::-1]
        cv2.imwrite(str(folder / "masks" / f"mask_{k:05d}.png"), mask)
    writer.release()
    ref_h, ref_w = cv2.imread(str(FOOTAGE / "scail_001_ref.jpg")).shape[:2]
    reference = np.full((ref_h, ref_w, 3), 255, np.uint8)
    reference[int(ref_h * 0.1):int(ref_h * 0.9), ref_w // 3:ref_w // 3 + ref_w // 6] = PALETTE[0][::-1]
    cv2.imwrite(str(folder / "reference_mask.png"), reference)
    # The 512p tier (896 x 512 for this landscape reference): the size the checks frame the footage to.
    return JobSpec(driving=str(folder / "driving.mp4"), driving_mask=str(folder / "masks"),
                   reference=str(FOOTAGE / "scail_001_ref.jpg"), reference_mask=str(folder / "reference_mask.png"))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--cases", nargs="+", choices=sorted(CASES), default=["512p", "1080p"])
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    for name in args.cases:
        frames, width, height = CASES[name]
        with tempfile.TemporaryDirectory() as tmp:
            spec = make_case(Path(tmp), frames, width, height)
            prepare, checks, verdict = [], [], ""
            for _ in range(args.repeats):
                started = time.perf_counter()
                inputs = prepare_inputs(spec)
                prepared = time.perf_counter()
                report = run_checks(inputs)
                done = time.perf_counter()
                prepare.append(prepared - started)
                checks.append(done - prepared)
                verdict = report.verdict
        record = {"case": name, "frames": frames, "size": f"{width}x{height}", "repeats": args.repeats,
                  "prepare_s": round(statistics.median(prepare), 2), "checks_s": round(statistics.median(checks), 2),
                  "total_s": round(statistics.median(p + c for p, c in zip(prepare, checks)), 2),
                  "verdict": verdict, "target_s": TARGET_S if name == "512p" else None}
        print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
