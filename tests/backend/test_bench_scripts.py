"""The benchmark scripts run (at toy sizes on the CPU). They are not timed here: figures live in bench/RESULTS.md."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
from scail_fixtures import REPO

pytestmark = pytest.mark.slow  # runs the bench scripts


@pytest.mark.parametrize(
    "script, args, keys",
    [
        ("dit_step.py", ["--small", "--no-compile", "--repeats", "1", "--backends", "native"],
         {"seconds", "tflops", "fraction_of_matmul_peak", "tokens"}),
        ("memory.py", ["--small", "--repeats", "1", "--modes", "bf16", "fp8+group"], {"seconds_per_step", "mode"}),
        ("segment.py", ["--frames", "2", "--size", "96x64"], {"track_s_per_frame", "write_matte_s_per_frame"}),
        ("download.py", ["--mib", "8"], {"client_mb_s", "ours_mb_s", "sha256_s", "overhead"}),
        ("score.py", ["--frames", "9", "--sizes", "224x128"], {"seconds", "per_score_s", "size"}),
    ],
)
def test_benchmark_runs_and_reports(script, args, keys):
    run = subprocess.run([sys.executable, str(REPO / "bench" / script), "--device", "cpu", *args],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    assert records and all(keys <= set(r) for r in records), run.stdout
    assert all(r.get("error") is None for r in records)
