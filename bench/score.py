"""Scoring time of a take: every review score and its flags, on the CPU, as the worker runs it after a take.

    .venvs/backend/bin/python bench/score.py [--frames 81] [--sizes 896x512 1280x720]

The take is the real fixture clip (scail_001, played forward then back to reach --frames) with a
little noise, against the clip itself as driving footage, at each size; the reference is its first
frame. Each size is scored three times: with an identity mask, as a real job has one (a stand-in for
it: the dancer keyed off the fixture's plain blue wall); a second take of that shot (a wedge's next
take: the driving clip's flows and face counts are kept from the first); and without a mask (the
whole frame is identity 1). Prints one JSON line per size: total seconds, seconds per score (flow shared by motion and
temporal is counted in motion), against the issue's target (under 10 s for 81 frames at 512p), with
the machine's load average and the process's CPU seconds (`cpu_s`), since this machine's two cores
are shared: under load the wall time mostly measures the other processes.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import cv2
import numpy as np

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
sys.path.insert(0, REPO)

from backend.pipeline import media, pixels  # noqa: E402
from backend.review.flags import take_flags  # noqa: E402
from backend.review.flow import TakeFlows  # noqa: E402
from backend.review.scores import background, faces, identity, motion, temporal  # noqa: E402
from backend.review.take import Take  # noqa: E402

TARGET_S = 10.0  # for 81 frames at 512p
CLIP = os.path.join(REPO, "tests", "fixtures", "footage", "scail_001_driving.mp4")


def clip_frames(count: int, height: int, width: int) -> np.ndarray:
    info = media.probe_clip(CLIP)
    cycle = list(range(info.frame_count)) + list(range(info.frame_count - 2, 0, -1))
    indices = [cycle[k % len(cycle)] for k in range(count)]
    return pixels.resize_cover_crop(media.read_frames(info, indices), height, width)


def keyed_mask(frames: np.ndarray) -> np.ndarray:
    """bool [N, H, W]: pixels far from the wall's colour (the first column's median), closed and filled
    a little, like a segmentation mask of the dancer (a stand-in: no segmentation model runs here)."""
    wall = np.median(frames[:, :, 0].reshape(-1, 3), axis=0)
    far = np.abs(frames.astype(np.int16) - wall.astype(np.int16)).max(axis=-1) > 60
    kernel = cv2.getStructuringElement(cv2.MORPH_ELLIPSE, (15, 15))
    return np.stack([cv2.morphologyEx(m.astype(np.uint8), cv2.MORPH_CLOSE, kernel) > 0 for m in far])


def time_scores(take: Take) -> dict:
    seconds, start, cpu_start = {}, time.perf_counter(), time.process_time()
    flows = TakeFlows(take)
    scores = []
    for name, measure in (("motion", motion.measure), ("temporal", temporal.measure),
                          ("identity", identity.measure), ("background", background.measure),
                          ("faces", faces.measure)):
        t = time.perf_counter()
        scores.append(measure(flows))
        seconds[name] = round(time.perf_counter() - t, 3)
    t = time.perf_counter()
    take_flags(scores)
    seconds["flags"] = round(time.perf_counter() - t, 3)
    return {"seconds": round(time.perf_counter() - start, 3), "cpu_s": round(time.process_time() - cpu_start, 3),
            "per_score_s": seconds}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--frames", type=int, default=81)
    parser.add_argument("--sizes", nargs="+", default=["896x512", "1280x720"], metavar="WxH")
    parser.add_argument("--device", default="cpu", help="scoring runs on the CPU; accepted for the bench runner")
    args = parser.parse_args()
    rng = np.random.default_rng(0)
    for size in args.sizes:
        width, height = (int(v) for v in size.split("x"))
        driving = clip_frames(args.frames, height, width)
        noisy = np.clip(driving.astype(np.int16) + rng.integers(-6, 7, driving.shape), 0, 255).astype(np.uint8)
        mask = keyed_mask(driving)
        second = np.clip(driving.astype(np.int16) + rng.integers(-9, 10, driving.shape), 0, 255).astype(np.uint8)
        for frames, masks, label in ((noisy, {0: mask}, "keyed identity mask"),
                                     (second, {0: mask}, "keyed identity mask, the shot's second take"),
                                     (noisy, {}, "no mask: the whole frame")):
            take = Take(frames, driving=driving, masks=masks, reference=driving[0])
            record = {"size": size, "frames": args.frames, "masks": label, **time_scores(take)}
            if masks:
                record["mask_area"] = round(float(mask.mean()), 3)
            if height == 512 and args.frames == 81:
                record.update(target_s=TARGET_S, within_target=record["seconds"] < TARGET_S)
            record["load_average_1min"] = round(os.getloadavg()[0], 2)
            record["cpus"] = os.cpu_count()
            print(json.dumps(record), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
