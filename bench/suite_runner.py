"""Book-keeping of bench/gpu_suite.py: a global deadline, per-stage budgets, one JSON file, the report.

Every stage and sub-run is recorded as it finishes (the JSON is rewritten each
time), so a run that is killed keeps what it measured. A failure is one line in
the record; a stage or sub-run that does not fit the time left says
"skipped: budget".
"""

from __future__ import annotations

import gc
import json
import os
import statistics
import time
from pathlib import Path

import torch

from common import forward_flops, synchronize

from backend.loaders.errors import first_line


def _free(device: torch.device) -> None:
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


class Suite:
    """Results of one suite run, written to `out` after every stage and sub-run."""

    def __init__(self, out: Path, budget_s: float, device: torch.device, header: dict):
        self.out, self.device, self.budget_s = out, device, budget_s
        self.deadline = self.stage_deadline = time.monotonic() + budget_s
        self.results = header | {"budget_s": budget_s, "stages": {}}
        out.parent.mkdir(parents=True, exist_ok=True)

    def left(self) -> float:
        """Seconds left in the current stage (never past the global deadline)."""
        return min(self.deadline, self.stage_deadline) - time.monotonic()

    def allows(self, seconds: float) -> bool:
        return self.left() >= seconds

    def stage(self, name: str) -> dict:
        return self.results["stages"].get(name, {})

    def write(self) -> None:
        tmp = self.out.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.results, indent=1), encoding="utf-8")
        os.replace(tmp, self.out)

    def run(self, name: str, fn, need_s, budget_s: float) -> dict:
        """Run `fn(record)` as stage `name` if `need_s` seconds (or `need_s()`, judged when the stage
        is due) are left; its sub-runs get `budget_s` at most."""
        need_s = need_s() if callable(need_s) else need_s
        record: dict = {}
        self.results["stages"][name] = record
        left = self.deadline - time.monotonic()
        if need_s and left < need_s:  # a stage that needs 0 s always runs
            record["status"] = f"skipped: budget ({max(left, 0):.0f} s left, needs ~{need_s:.0f} s)"
        else:
            self.stage_deadline = time.monotonic() + budget_s
            start = time.perf_counter()
            try:
                fn(record)
                record.setdefault("status", "ok")
            except Exception as exc:  # one stage's failure must not lose the others
                record["status"] = f"error: {type(exc).__name__}: {first_line(exc)}"[:300]
            record["stage_seconds"] = round(time.perf_counter() - start, 1)
            self.stage_deadline = self.deadline
            _free(self.device)
        print(f"[{name}] {record['status']} ({record.get('stage_seconds', 0)} s)", flush=True)
        self.write()
        return record

    def attempt(self, runs: list, entry: dict, fn, need_s: float) -> dict:
        """One sub-run: `fn(entry)` fills in figures; out of memory and errors are results."""
        runs.append(entry)
        if not self.allows(need_s):
            entry["status"] = "skipped: budget"
        else:
            try:
                fn(entry)
                entry.setdefault("status", "ok")
            except torch.OutOfMemoryError:
                entry["status"] = "out of memory"
            except ImportError as exc:
                entry["status"] = f"skipped: not available ({type(exc).__name__}: {first_line(exc)})"[:300]
            except Exception as exc:
                entry["status"] = f"error: {type(exc).__name__}: {first_line(exc)}"[:300]
            _free(self.device)
        self.write()
        return entry


MIN_TIMED_CALLS = 3  # a figure resting on fewer calls is marked so in the report


def step_inputs(model, inputs: dict) -> dict:
    """What one denoising step passes the transformer: the noisy latents, the timestep, and the
    segment's conditioning embedded once beforehand (as `sample_segment` does), so the timed call
    is exactly a step and not a step plus the once-per-segment embedding."""
    fixed = {key: value for key, value in inputs.items() if key not in ("x", "t")}
    with torch.no_grad():
        conditioning = model(**fixed).first_sample()
    return {"x": inputs["x"], "t": inputs["t"], "conditioning": conditioning}


def timed_calls(fn, device: torch.device, suite: Suite, calls: int = MIN_TIMED_CALLS) -> dict:
    """A warm-up call that is never reported (compile, autotune, first-touch allocations), then up to
    `calls` timed calls while the stage's budget allows; the figure is their median.

    The device is synchronised before every timer starts (queued kernels of the weights' random
    init or of the previous call never land in a figure) and after every call. With no time left
    after the warm-up there is no figure: `seconds` is absent and the record says why.
    """
    with torch.no_grad():
        synchronize(device)
        start = time.perf_counter()
        fn()
        synchronize(device)
        warmup = time.perf_counter() - start
        times: list[float] = []
        while len(times) < calls and suite.allows(max(times or [warmup])):
            synchronize(device)
            start = time.perf_counter()
            fn()
            synchronize(device)
            times.append(time.perf_counter() - start)
    record = {"warmup_s": round(warmup, 3), "timed_calls": len(times)}
    if not times:
        record["status"] = "not measured: no time left after the warm-up call"
        return record
    ordered = sorted(times)
    median = statistics.median(ordered)
    record |= {"seconds": round(median, 3), "min_s": round(ordered[0], 3), "max_s": round(ordered[-1], 3),
               "spread_percent": round(100 * (ordered[-1] - ordered[0]) / median, 1)}
    return record


def timed_step(model, inputs: dict, device: torch.device, suite: Suite, calls: int = MIN_TIMED_CALLS) -> dict:
    """`timed_calls` of one denoising step of `model` (the conditioning embedded once, untimed)."""
    step = step_inputs(model, inputs)
    return timed_calls(lambda: model(**step), device, suite, calls)


def forward_figures(timing: dict, tokens: int, config: dict, peak: float | None) -> dict:
    if "seconds" not in timing:
        return timing
    flops = forward_flops(tokens, config) / timing["seconds"]
    figures = timing | {"tokens": tokens, "tflops": round(flops / 1e12, 2)}
    if peak:
        figures["percent_of_bf16_peak"] = round(100 * flops / peak, 1)
    return figures


# -- the report -----------------------------------------------------------------------------------


def calls_note(record: dict) -> str:
    """How many timed calls a figure rests on, said beside it; fewer than MIN_TIMED_CALLS is flagged."""
    calls = record.get("timed_calls", 0)
    if calls >= MIN_TIMED_CALLS:
        return f"median of {calls}, spread {record.get('spread_percent')} %"
    return f"ONLY {calls} timed call{'s' if calls != 1 else ''}: fewer than {MIN_TIMED_CALLS}, not a reliable median"


def _fmt(value, unit="") -> str:
    return "-" if value is None else f"{value:g}{unit}" if isinstance(value, (int, float)) else str(value)


def _forward_rows(stages: dict, name: str, label: str, target: float | None) -> list[tuple]:
    stage = stages.get(name, {})
    ok = [r for r in stage.get("runs", []) if "seconds" in r]
    rows = []
    for title, runs in (("eager", [r for r in ok if r["variant"] == "eager"]),
                        ("fastest", ok)):
        if not runs:
            rows.append((f"{label} forward, {title}", _missing(stage), _target(target), ""))
            continue
        best = min(runs, key=lambda r: r["seconds"])
        value = (f"{best['seconds']} s ({best['backend']}, {best['variant']}; {best.get('tflops')} TFLOP/s, "
                 f"{best.get('percent_of_bf16_peak')} % of peak; {calls_note(best)})")
        rows.append((f"{label} forward, {title}", value, _target(target), _verdict(best["seconds"], target, best)))
    return rows


def _missing(stage: dict) -> str:
    """Why a stage has no figure: its own status, or its first sub-run's."""
    status = stage.get("status", "not run")
    return status if status != "ok" else next((r["status"] for r in stage.get("runs", [])), "no run")


def _target(target: float | None) -> str:
    return "-" if target is None else f"<= {target:g} s"


def _verdict(value: float | None, target: float | None, record: dict | None = None) -> str:
    if value is None or target is None:
        return ""
    verdict = "met" if value <= target else "not met"
    if record is not None and record.get("timed_calls", 0) < MIN_TIMED_CALLS:
        verdict += f" (on {record.get('timed_calls', 0)} timed call(s): unreliable)"
    return verdict


def summary_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) rows of the report."""
    stages = results["stages"]
    mm = stages.get("matmul", {})
    rows = [("bf16 matmul peak", _fmt(mm.get("bf16_tflops"), " TFLOP/s"), "-", ""),
            ("fp8 _scaled_mm peak", _fmt(mm.get("fp8_tflops", mm.get("fp8")), " TFLOP/s"), "-", "")]
    rows += _forward_rows(stages, "forward_512p", "512p", 6.6)
    mem = stages.get("memory", {})
    uncapped = mem.get("uncapped")
    rows.append(("step, uncapped bf16", f"{uncapped['seconds']} s ({calls_note(uncapped)})" if uncapped
                 else _missing(mem), "-", ""))
    for cap, target in (("24", mem.get("target_24_s")), ("16", None)) if mem.get("caps", True) else ():
        best = mem.get(f"best_{cap}")
        value = (f"{best['seconds']} s ({best['mode']}, device peak {best.get('device_peak_gib')} GiB; "
                 f"{calls_note(best)})") if best else "no mode ran within the cap"
        rows.append((f"step under a {cap} GiB cap", value, _target(target) if cap == "24" else "runs",
                     _verdict(best and best["seconds"], target, best) if cap == "24" else ("met" if best else "not met")))
    vae = stages.get("vae_decode", {})
    rows.append(("VAE decode", f"{vae['seconds']} s, device peak {_fmt(vae.get('device_peak_gib'))} GiB; "
                 f"{calls_note(vae)}" if "seconds" in vae
                 else _missing(vae), "-", ""))
    job = stages.get("job", {})
    timings = ", ".join(f"{k} {v}" for k, v in job.get("timings", {}).items())
    rows.append(("fast-preset job", f"{job['total_s']} s ({timings}; {calls_note(job)})" if "total_s" in job
                 else _missing(job), "<= 30 s",
                 _verdict(job.get("total_s"), 30.0, job)))
    rows += _forward_rows(stages, "forward_704p", "704p", None)
    if results.get("toy"):  # the targets are for full size on a GPU
        rows = [(*row[:3], "(toy)" if row[3] else "") for row in rows]
    return rows


def markdown_section(results: dict, note: str = "") -> str:
    env = results["stages"].get("environment", {})
    lines = [f"\n## GPU suite, {env.get('date', '?')}: {env.get('device', '?')}\n",
             f"torch {env.get('torch')}, diffusers {env.get('diffusers')}, transformers {env.get('transformers')}, "
             f"CUDA {env.get('cuda', '-')}, capability {env.get('capability', '-')}.",
             f"Command: `{env.get('command', '?')}` (budget {results['budget_s']} s"
             f"{', toy sizes on the CPU' if results.get('toy') else ''}).", ""]
    if note:
        lines += [note, ""]
    lines += ["| figure | value | target | verdict |", "|---|---|---|---|"]
    lines += [f"| {' | '.join(row)} |" for row in summary_rows(results)]
    skipped = [f"{name}: {rec['status']}" for name, rec in results["stages"].items()
               if rec.get("status", "ok") != "ok"]
    for name, rec in results["stages"].items():  # sub-runs without a figure: fast paths missing, OOM, budget
        for run in rec.get("runs", []):
            if run.get("status", "ok") != "ok":
                what = run.get("mode") or f"{run.get('backend')} {run.get('variant')}"
                cap = f" under {run['cap_gib']} GiB" if run.get("cap_gib") else ""
                skipped.append(f"{name} {what}{cap}: {run['status']}")
    if skipped:
        lines += ["", "Not measured:", *(f"- {line}" for line in skipped)]
    return "\n".join(lines) + "\n"


def print_table(results: dict) -> None:
    rows = [("figure", "value", "target", "verdict"), *summary_rows(results)]
    widths = [max(len(r[i]) for r in rows) for i in range(3)]
    for row in rows:
        print("  ".join(cell.ljust(width) for cell, width in zip(row[:3], widths)), row[3], flush=True)
