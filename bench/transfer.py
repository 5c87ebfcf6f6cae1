"""Files over the connection to a remote worker: throughput and a job's transfer overhead, on loopback with TLS.

Starts a real worker (`python -m backend serve --tls`, tiny profile) on 127.0.0.1 and drives it with
the add-on's own client (`core.worker_client`, `core.transfer`), as Blender would:

1. upload and download throughput of a 64 MiB file of random bytes;
2. a 65-frame 2048x1080 driving clip (the fixture clip scaled up, encoded as mp4) uploaded, then
   uploaded again (the worker has it: only hashed);
3. an 81-frame 512p result (PNG frames of the fixture clip at 896x512, as a job folder of the worker)
   fetched into a local folder, then fetched again (nothing changed).

    .venvs/backend/bin/python bench/transfer.py [--mib 64]
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FOOTAGE = REPO / "tests" / "fixtures" / "footage"
DRIVING = FOOTAGE / "scail_001_driving.mp4"


def addon_modules():
    """The add-on's client modules, imported as part of a package (as Blender imports them)."""
    package = types.ModuleType("scail2")
    package.__path__ = [str(REPO)]
    sys.modules["scail2"] = package
    from scail2.core import transfer, worker_client

    return worker_client, transfer


def start_worker(folder: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu", "--jobs-root",
         str(folder / "jobs"), "--listen", "127.0.0.1:0", "--tls"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "XDG_CONFIG_HOME": str(folder / "config")},
    )
    found = {}
    for raw in proc.stderr:
        line = raw.decode()
        for key, pattern in (("fingerprint", r"fingerprint: ([0-9A-F:]{95})"), ("token", r"add-on\): (\S+)"),
                             ("port", r"listening on 127\.0\.0\.1:(\d+) with TLS")):
            if match := re.search(pattern, line):
                found[key] = match.group(1)
        if "port" in found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, found
    raise SystemExit(f"the worker did not start (status {proc.wait()})")


def footage_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(DRIVING))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC))
    return frames


def write_clip(path: Path, frames: list[np.ndarray]) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 16.0, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="size of the throughput file (default 64)")
    args = parser.parse_args()
    worker_client, transfer = addon_modules()
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        proc, found = start_worker(tmp)
        try:
            client = worker_client.WorkerClient.connect("127.0.0.1", int(found["port"]), token=found["token"],
                                                        fingerprint=found["fingerprint"], timeout=120)
            transfers = client.transfers
            rows = []

            big = tmp / "random.bin"
            big.write_bytes(os.urandom(args.mib << 20))
            seconds = timed(lambda: transfers.upload_file(str(big)))
            rows.append((f"upload {args.mib} MiB random", seconds, args.mib / seconds))
            served = tmp / "jobs" / "bench_download"
            served.mkdir(parents=True)
            os.link(big, served / "random.bin")
            seconds = timed(lambda: transfers.fetch_folder(str(served), str(tmp / "local_download")))
            rows.append((f"download {args.mib} MiB random", seconds, args.mib / seconds))

            clip = tmp / "clip_2048x1080.mp4"
            write_clip(clip, footage_frames(65, (2048, 1080)))
            clip_mib = clip.stat().st_size / (1 << 20)
            seconds = timed(lambda: transfers.upload_file(str(clip)))
            rows.append((f"upload 65-frame 2048x1080 clip ({clip_mib:.1f} MiB)", seconds, clip_mib / seconds))
            seconds = timed(lambda: transfers.upload_file(str(clip)))
            rows.append(("same clip again (worker has it: hash only)", seconds, None))

            result = tmp / "jobs" / "bench_result"
            (result / "frames").mkdir(parents=True)
            for k, frame in enumerate(footage_frames(81, (896, 512))):
                cv2.imwrite(str(result / "frames" / f"frame_{k:06d}.png"), frame)
            write_clip(result / "preview.mp4", footage_frames(81, (896, 512)))
            (result / "manifest.json").write_text("{}")
            result_mib = folder_bytes(result) / (1 << 20)
            local = tmp / "local_result"
            seconds = timed(lambda: transfers.fetch_folder(str(result), str(local)))
            rows.append((f"fetch 81-frame 512p result ({result_mib:.1f} MiB)", seconds, result_mib / seconds))
            assert folder_bytes(local) == folder_bytes(result)
            seconds = timed(lambda: transfers.fetch_folder(str(result), str(local)))
            rows.append(("same result again (nothing changed)", seconds, None))
            client.close()
        finally:
            proc.terminate()
            proc.wait(30)
    print("| step | seconds | MiB/s |\n|---|---|---|")
    for name, seconds, rate in rows:
        print(f"| {name} | {seconds:.2f} | {'' if rate is None else f'{rate:.1f}'} |")


if __name__ == "__main__":
    main()
