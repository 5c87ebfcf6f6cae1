"""bench/gpu_suite.py runs every stage at toy size on the CPU and keeps to its deadline (figures: bench/RESULTS.md)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest
from scail_fixtures import REPO

pytestmark = pytest.mark.slow  # runs the bench suite

STAGES = ["environment", "matmul", "forward_512p", "memory", "vae_decode", "job", "forward_704p"]
REPO_RESULTS = REPO / "bench" / "RESULTS.md"


def _suite(tmp_path, *args):
    out, md = tmp_path / "suite.json", tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_suite.py"), "--toy", "--out", str(out),
                          "--results-md", str(md), *args], cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    return json.loads(out.read_text()), md, run.stdout


def _measured_or_skipped(run: dict) -> bool:
    return run["status"].startswith("skipped: ") or (run["status"] == "ok" and run["seconds"] > 0)


def test_toy_suite_measures_every_stage(tmp_path):
    before = hashlib.sha256(REPO_RESULTS.read_bytes()).hexdigest()
    results, md, stdout = _suite(tmp_path)
    stages = results["stages"]
    assert list(stages) == STAGES
    assert all(stage["status"] == "ok" for stage in stages.values()), {k: v["status"] for k, v in stages.items()}
    assert stages["environment"]["torch"] and stages["environment"]["device"]
    assert stages["matmul"]["bf16_tflops"] > 0 and stages["matmul"]["fp8"].startswith("skipped: ")
    for name in ("forward_512p", "forward_704p"):
        runs = stages[name]["runs"]
        assert runs and all(_measured_or_skipped(r) for r in runs), runs
        assert stages[name]["best"]["seconds"] > 0
    backends = {r["backend"] for r in stages["forward_512p"]["runs"] if r["variant"] == "eager"}
    assert "native" in backends
    variants = {r["variant"] for r in stages["forward_512p"]["runs"]}
    assert {"eager", "fp8", "compile", "fp8+compile"} <= variants
    fast = {r["variant"]: r for r in stages["forward_512p"]["runs"] if r["variant"] != "eager"}
    assert fast["fp8"]["status"] == "ok" and fast["fp8"]["seconds"] > 0  # the real fp8 compute path ran
    assert fast["compile"]["status"].startswith("skipped: --toy without --compile")
    modes = {r["mode"]: r for r in stages["memory"]["runs"]}
    assert {"bf16+none", "fp8+none", "bf16+group", "fp8+group", "bf16+model", "fp8c+none", "fp8c+group"} <= set(modes)
    assert all(r["status"] == "ok" and r["seconds"] > 0 for r in modes.values())
    assert stages["vae_decode"]["seconds"] > 0
    job = stages["job"]
    assert job["total_s"] > 0 and job["frames"] == 5 and {"encode", "sample", "decode"} <= set(job["timings"])
    text = md.read_text()
    assert text.count("## GPU suite") == 1 and "| fast-preset job |" in text and "--toy" in text
    assert re.search(r"^- forward_512p \S+ compile: skipped: ", text, re.M)  # what did not run is said
    assert stdout.splitlines()[-1].startswith("704p forward, fastest")  # the table is printed last
    assert hashlib.sha256(REPO_RESULTS.read_bytes()).hexdigest() == before


def test_stages_past_the_deadline_are_skipped_not_run(tmp_path):
    results, md, _ = _suite(tmp_path, "--budget-s", "0")
    stages = results["stages"]
    assert list(stages) == STAGES
    assert stages["environment"]["status"] == "ok"
    assert all(stages[name]["status"].startswith("skipped: budget") for name in STAGES[1:])
    assert "- matmul: skipped: budget" in md.read_text()
