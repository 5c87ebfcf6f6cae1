"""bench/gpu_suite.py runs every stage at toy size on the CPU and keeps to its deadline (figures: bench/RESULTS.md)."""

from __future__ import annotations

import hashlib
import json
import re
import subprocess
import sys

import pytest
import torch

from scail_fixtures import REPO, tiny_model

pytestmark = pytest.mark.slow  # runs the bench suite

STAGES = ["environment", "matmul", "forward_512p", "memory", "vae_decode", "job", "forward_704p"]
REPO_RESULTS = REPO / "bench" / "RESULTS.md"


def _suite(tmp_path, *args):
    out, md = tmp_path / "suite.json", tmp_path / "RESULTS.md"
    run = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_suite.py"), "--toy", "--out", str(out),
                          "--results-md", str(md), *args], cwd=REPO, capture_output=True, text=True, timeout=900)
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
    # Every figure: a warm-up that is not the figure, then at least 3 timed calls, their median and spread.
    figures = [*stages["forward_512p"]["runs"], *stages["memory"]["runs"], stages["vae_decode"], job]
    for figure in (f for f in figures if "seconds" in f):
        assert figure["timed_calls"] >= 3 and figure["warmup_s"] > 0, figure
        assert figure["min_s"] <= figure["seconds"] <= figure["max_s"], figure
    assert job["total_s"] == job["seconds"]
    assert "median of 3" in text and "ONLY" not in text
    best = stages["forward_512p"]["best"]
    ok = [r for r in stages["forward_512p"]["runs"] if "seconds" in r]
    assert best["seconds"] == min(r["seconds"] for r in ok)  # chosen by median, not by one sample


def test_stages_past_the_deadline_are_skipped_not_run(tmp_path):
    results, md, _ = _suite(tmp_path, "--budget-s", "0")
    stages = results["stages"]
    assert list(stages) == STAGES
    assert stages["environment"]["status"] == "ok"
    assert all(stages[name]["status"].startswith("skipped: budget") for name in STAGES[1:])
    assert "- matmul: skipped: budget" in md.read_text()


@pytest.fixture
def suite_modules(monkeypatch):
    monkeypatch.syspath_prepend(str(REPO / "bench"))
    import suite_runner

    return suite_runner


def test_a_figure_on_fewer_than_three_calls_is_marked_so(suite_modules, tmp_path):
    """A budget that leaves one timed call after the warm-up: the report says it is not a median."""
    runner = suite_modules
    forward = {"backend": "native", "variant": "eager", "seconds": 5.0, "timed_calls": 1, "warmup_s": 40.0,
               "min_s": 5.0, "max_s": 5.0, "spread_percent": 0.0, "tflops": 1, "percent_of_bf16_peak": 50,
               "status": "ok"}
    results = {"budget_s": 1, "toy": False, "stages": {
        "environment": {"status": "ok"},
        "forward_512p": {"status": "ok", "runs": [forward]},
        "job": {"status": "ok", "total_s": 20.0, "seconds": 20.0, "timed_calls": 3, "spread_percent": 1.0,
                "timings": {}},
    }}
    text = runner.markdown_section(results)
    row = next(line for line in text.splitlines() if line.startswith("| 512p forward, eager"))
    assert "ONLY 1 timed call: fewer than 3" in row and "met (on 1 timed call(s): unreliable)" in row
    job_row = next(line for line in text.splitlines() if line.startswith("| fast-preset job"))
    assert "median of 3" in job_row and job_row.endswith("| met |")


def test_no_time_after_the_warm_up_gives_no_figure(suite_modules, tmp_path):
    runner = suite_modules
    suite = runner.Suite(tmp_path / "s.json", 0.0, torch.device("cpu"), {})
    record = runner.timed_calls(lambda: None, torch.device("cpu"), suite)
    assert "seconds" not in record and record["timed_calls"] == 0 and record["status"].startswith("not measured")


def test_every_timer_starts_after_a_synchronize_and_times_one_denoising_step(suite_modules, tmp_path, monkeypatch):
    """The device is synchronised before each timer; each call is one step on the embedded conditioning."""
    runner = suite_modules
    events = []
    monkeypatch.setattr(runner, "synchronize", lambda device: events.append("sync"))
    real_counter = runner.time.perf_counter
    monkeypatch.setattr(runner.time, "perf_counter", lambda: events.append("clock") or real_counter())
    model = tiny_model()
    calls = []
    model.register_forward_pre_hook(lambda module, args, kwargs: calls.append(sorted(k for k, v in kwargs.items()
                                                                                      if v is not None)),
                                    with_kwargs=True)
    sys.path.insert(0, str(REPO / "bench"))
    from common import forward_inputs

    from scail_fixtures import tiny_config
    inputs = forward_inputs(tiny_config(), 64, 96, 9, torch.device("cpu"), torch.float32)
    suite = runner.Suite(tmp_path / "s.json", 60.0, torch.device("cpu"), {})
    record = runner.timed_step(model, inputs, torch.device("cpu"), suite)
    assert record["timed_calls"] == 3
    starts = [i for i, e in enumerate(events) if e == "clock"][::2]  # each call: a start and a stop
    assert len(starts) == 4 and all(events[i - 1] == "sync" for i in starts)
    assert "x" not in calls[0] and "pose_latents" in calls[0]  # the conditioning, embedded once, untimed
    assert calls[1:] == [["conditioning", "t", "x"]] * 4  # the warm-up and three timed steps


def test_a_memory_mode_runs_in_a_fresh_process(tmp_path):
    """What the suite runs for every capped mode (on a GPU): here uncapped on the CPU, at toy size."""
    out = tmp_path / "mode.json"
    mode = {"cap": None, "storage": "fp8", "offload": "group", "backend": "native"}
    run = subprocess.run([sys.executable, str(REPO / "bench" / "gpu_suite.py"), "--toy", "--memory-child",
                          json.dumps(mode), "--out", str(out), "--budget-s", "120"],
                         cwd=REPO, capture_output=True, text=True, timeout=300)
    assert run.returncode == 0, run.stderr[-2000:]
    entry = json.loads(out.read_text())
    assert entry["timed_calls"] >= 3 and entry["seconds"] > 0 and entry["warmup_s"] > 0
