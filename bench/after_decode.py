"""The worker's CPU time after a segment is decoded: PNGs and the preview, before and after issue 29.

    .venvs/backend/bin/python bench/after_decode.py [--frames 81] [--repeats 3]

"before": what the job did until issue 29, on the job's own thread while the GPU waited: each PNG
encoded and written in turn, then every PNG read back from disk to encode the preview.
"after": `FrameOutput` (backend/pipeline/frame_output.py): the frames handed to a PNG pool and to the
preview encoder. Two figures for it: `handover_s`, what the job's thread spends before it can sample
the next segment (the GPU's wait), and `drain_s`, the time to the last file on disk when nothing
overlaps it (the job's last segment, whose writes only the preview's end waits for).
Random frames at 512p and 720p (random pixels are PNG's worst case: an upper bound).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.pipeline import durable, media  # noqa: E402
from backend.pipeline.frame_output import FrameOutput, PreviewEncoder  # noqa: E402

SIZES = {"512p": (512, 896), "720p": (704, 1280)}


def _name(k: int) -> str:
    return f"frame_{k:05d}.png"


def before(folder: Path, frames: np.ndarray) -> dict:
    start = time.perf_counter()
    for k, rgb in enumerate(frames):
        durable.write_png_atomic(folder / _name(k), rgb)
    pngs = time.perf_counter() - start
    back = np.stack([media.read_image(folder / _name(k))[0] for k in range(len(frames))])
    durable.write_preview_mp4(folder / "preview.mp4", back, 16.0)
    total = time.perf_counter() - start
    return {"blocking_s": total, "pngs_s": pngs, "preview_s": total - pngs}


def after(folder: Path, frames: np.ndarray) -> dict:
    start = time.perf_counter()
    output = FrameOutput(folder, _name, PreviewEncoder(folder / "preview.mp4", 16.0))
    output.add(0, range(len(frames)), frames)
    handover = time.perf_counter() - start
    output.settle(wait=True)
    output.close(keep_preview=True)
    return {"handover_s": handover, "drain_s": time.perf_counter() - start}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for size, (height, width) in SIZES.items():
        frames = rng.integers(0, 256, size=(args.frames, height, width, 3), dtype=np.uint8)
        runs: dict[str, list[dict]] = {"before": [], "after": []}
        for _ in range(args.repeats):  # alternated, so load on the machine hits both alike
            for name, fn in (("before", before), ("after", after)):
                with tempfile.TemporaryDirectory() as tmp:
                    runs[name].append(fn(Path(tmp), frames))
        med = {name: {key: statistics.median(r[key] for r in rs) for key in rs[0]} for name, rs in runs.items()}
        b, a = med["before"], med["after"]
        print(f"{size} x {args.frames} frames (median of {args.repeats}): before {b['blocking_s']:.2f} s on the job's "
              f"thread (PNGs {b['pngs_s']:.2f} s, preview {b['preview_s']:.2f} s); after: handover "
              f"{a['handover_s']:.3f} s, all written {a['drain_s']:.2f} s "
              f"({1000 * b['blocking_s'] / args.frames:.1f} -> {1000 * a['handover_s'] / args.frames:.2f} ms a frame "
              "on the job's thread)", flush=True)


if __name__ == "__main__":
    main()
