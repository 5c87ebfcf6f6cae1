"""Segmentation speed: SAM 3 tracking per frame, and painting + writing masks and mattes per frame.

    .venvs/backend/bin/python bench/segment.py --device cuda --config full --frames 81   # the GPU figure
    .venvs/backend/bin/python bench/segment.py --device cpu                               # tiny config

`--config full` is transformers' default Sam3VideoConfig (the facebook/sam3 architecture) with
random weights made on the device (speed does not depend on weight values), its thresholds at 0 and
its tracker capped at 8 objects, so every frame detects and tracks 8 instances.
`--weights DIR` times the real checkpoint instead. Prints one JSON line.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.segmentation.run import Segmenters, write_masks, write_matte  # noqa: E402
from backend.segmentation.sam3 import Sam3Segmenter, tiny_tokenizer  # noqa: E402
from protocol import SegmentSpec  # noqa: E402


def full_random(device: str) -> Sam3Segmenter:
    from transformers import Sam3VideoConfig, Sam3VideoModel

    # Random weights score nothing above SAM 3's thresholds: admit every detection, and cap the tracker at
    # 8 objects (a crowd), so the figure includes tracking, not detection alone.
    config = Sam3VideoConfig(max_num_objects=8, score_threshold_detection=0.0, new_det_thresh=0.0)
    with torch.device(device):
        model = Sam3VideoModel(config)
    dtype = torch.bfloat16 if device.startswith("cuda") else torch.float32
    # The tiny word-level tokenizer stands in for CLIP's: the ids only need to be in range.
    return Sam3Segmenter(model.eval().to(dtype), tiny_tokenizer(), "random full config", device)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--config", choices=["tiny", "full"], default="tiny")
    parser.add_argument("--weights", type=Path, help="time a real facebook/sam3 folder instead")
    parser.add_argument("--frames", type=int, default=8)
    parser.add_argument("--size", default="1920x1080", help="source frame size WIDTHxHEIGHT")
    args = parser.parse_args()
    width, height = (int(v) for v in args.size.split("x"))

    start = time.perf_counter()
    if args.weights:
        segmenter = Sam3Segmenter.load(args.weights, args.device)
    elif args.config == "full":
        segmenter = full_random(args.device)
    else:
        segmenter = Segmenters(tiny=True, device=args.device).text()
    load_s = time.perf_counter() - start
    frames = np.random.default_rng(0).integers(0, 256, (args.frames, height, width, 3), dtype=np.uint8)
    if args.device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    start = time.perf_counter()
    tracks = segmenter.track(iter(frames), args.frames, height, width, "person")
    if args.device.startswith("cuda"):
        torch.cuda.synchronize()
    track_s = time.perf_counter() - start
    names = [f"frame_{t:05d}.png" for t in range(args.frames)]
    with tempfile.TemporaryDirectory() as folder:
        start = time.perf_counter()
        write_masks(tracks, SegmentSpec(task="masks", source="bench"), Path(folder), names)
        masks_s = time.perf_counter() - start
        start = time.perf_counter()
        write_matte(tracks, iter(frames), Path(folder), names)
        matte_s = time.perf_counter() - start
    record = {
        "device": args.device, "model": segmenter.name, "frames": args.frames, "size": [width, height],
        "instances": len(tracks.instances), "load_s": round(load_s, 2),
        "track_s_per_frame": round(track_s / args.frames, 4),
        "write_masks_s_per_frame": round(masks_s / args.frames, 4),
        "write_matte_s_per_frame": round(matte_s / args.frames, 4),
        "peak_gpu_bytes": torch.cuda.max_memory_allocated() if args.device.startswith("cuda") else None,
        "torch": torch.__version__, "threads": torch.get_num_threads(),
    }
    print(json.dumps(record))
    return 0


if __name__ == "__main__":
    sys.exit(main())
