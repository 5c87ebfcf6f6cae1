"""bench/timer_overhead.py runs at toy size: a tiny job followed by the timer, redrawing only on changes."""

import json
import os
import subprocess
import sys

import pytest

import blender_testing

needs_backend = pytest.mark.skipif(not os.path.isfile(blender_testing.BACKEND_PYTHON),
                                   reason="backend environment missing")


@needs_backend
def test_timer_overhead_bench_runs(tmp_path):
    script = os.path.join(blender_testing.REPO_ROOT, "bench", "timer_overhead.py")
    proc = subprocess.run([sys.executable, script, "--steps", "3"], env=blender_testing.isolated_blender_env(
        str(tmp_path)), capture_output=True, text=True, timeout=600, cwd=str(tmp_path))
    assert proc.returncode == 0, proc.stdout[-3000:] + proc.stderr[-3000:]
    figures = json.loads(proc.stdout[proc.stdout.rindex("{"):])
    assert figures["job"] == "done"
    # A redraw pass only when something changed: never more passes than ticks.
    assert 0 < figures["redraw_passes_per_minute"] <= figures["ticks_per_minute"]
