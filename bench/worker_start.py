"""Worker start to ready, as the add-on sees it: process start, first answer, model loaded.

    .venvs/backend/bin/python bench/worker_start.py [--model tiny | --weights DIR] [--repeats 3]

Uses the add-on's own client (core/worker_client.py, standard library only), imported as part of the add-on
package without running its ``__init__`` (which needs Blender).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
import types
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
_addon = types.ModuleType("scail2")
_addon.__path__ = [str(REPO)]
sys.modules.setdefault("scail2", _addon)

from scail2 import protocol  # noqa: E402
from scail2.core.worker_client import WorkerClient  # noqa: E402

FOOTAGE = REPO / "tests" / "fixtures" / "footage"


def wait_for(client: WorkerClient, kinds: set[str], timeout: float = 600.0) -> dict:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        for message in client.poll(timeout=0.05):
            if message["type"] in kinds:
                return message
            if message["type"] == "error":
                raise RuntimeError(message.get("message"))
    raise TimeoutError(f"no {kinds} within {timeout} s")


def one_start(model_args: list[str], jobs_root: Path) -> dict:
    start = time.perf_counter()
    client = WorkerClient.start(sys.executable, ["--jobs-root", str(jobs_root), *model_args], cwd=str(REPO))
    try:
        client.send("hello")
        wait_for(client, {"capabilities"})
        answered = time.perf_counter() - start
        spec = protocol.JobSpec(driving=str(FOOTAGE / "scail_001_driving.mp4"), reference=str(FOOTAGE / "scail_001_ref.jpg"),
                                height=64, width=128, steps=1, frame_end=1, seed=0)
        client.submit(spec)
        wait_for(client, {"started"})
        loaded = time.perf_counter() - start
        wait_for(client, {"done"})
        first_job = time.perf_counter() - start
    finally:
        client.stop(timeout=10)
    return {"hello": answered, "model_loaded": loaded, "first_tiny_job_done": first_job}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--weights", type=Path)
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    model_args = ["--weights", str(args.weights)] if args.weights else ["--model", "tiny"]
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for i in range(args.repeats):
            runs.append(one_start(model_args, Path(tmp) / str(i)))
    for key in runs[0]:
        values = [r[key] for r in runs]
        print(f"{key}: median {statistics.median(values):.2f} s (runs: {', '.join(f'{v:.2f}' for v in values)})")


if __name__ == "__main__":
    main()
