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


def timed_forward(model, inputs: dict, device: torch.device, suite: Suite, repeats: int) -> dict:
    """The first call's time, then up to `repeats` more while the stage's budget allows; seconds = their median."""
    with torch.no_grad():
        start = time.perf_counter()
        model(**inputs)
        synchronize(device)
        first = time.perf_counter() - start
        times = []
        while len(times) < repeats and suite.allows(min(times or [first])):
            start = time.perf_counter()
            model(**inputs)
            synchronize(device)
            times.append(time.perf_counter() - start)
    seconds = sorted(times)[len(times) // 2] if times else first
    return {"seconds": round(seconds, 3), "first_call_s": round(first, 3), "timed_calls": len(times)}


def forward_figures(timing: dict, tokens: int, config: dict, peak: float | None) -> dict:
    flops = forward_flops(tokens, config) / timing["seconds"]
    figures = timing | {"tokens": tokens, "tflops": round(flops / 1e12, 2)}
    if peak:
        figures["percent_of_bf16_peak"] = round(100 * flops / peak, 1)
    return figures



# -- the report -----------------------------------------------------------------------------------


def _fmt(value, unit="") -> str:
    return "-" if value is None else f"{value:g}{unit}" if isinstance(value, (int, float)) else str(value)


def _forward_rows(stages: dict, name: str, label: str, target: float | None) -> list[tuple]:
    stage = stages.get(name, {})
    ok = [r for r in stage.get("runs", []) if r.get("status") == "ok"]
    rows = []
    for title, runs in (("eager", [r for r in ok if r["variant"] == "eager"]),
                        ("fastest", ok)):
        if not runs:
            rows.append((f"{label} forward, {title}", _missing(stage), _target(target), ""))
            continue
        best = min(runs, key=lambda r: r["seconds"])
        value = (f"{best['seconds']} s ({best['backend']}, {best['variant']}; {best.get('tflops')} TFLOP/s, "
                 f"{best.get('percent_of_bf16_peak')} % of peak)")
        rows.append((f"{label} forward, {title}", value, _target(target), _verdict(best["seconds"], target)))
    return rows


def _missing(stage: dict) -> str:
    """Why a stage has no figure: its own status, or its first sub-run's."""
    status = stage.get("status", "not run")
    return status if status != "ok" else next((r["status"] for r in stage.get("runs", [])), "no run")


def _target(target: float | None) -> str:
    return "-" if target is None else f"<= {target:g} s"


def _verdict(value: float | None, target: float | None) -> str:
    if value is None or target is None:
        return ""
    return "met" if value <= target else "not met"


def summary_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(figure, value, target, verdict) rows of the report."""
    stages = results["stages"]
    mm = stages.get("matmul", {})
    rows = [("bf16 matmul peak", _fmt(mm.get("bf16_tflops"), " TFLOP/s"), "-", ""),
            ("fp8 _scaled_mm peak", _fmt(mm.get("fp8_tflops", mm.get("fp8")), " TFLOP/s"), "-", "")]
    rows += _forward_rows(stages, "forward_512p", "512p", 6.6)
    mem = stages.get("memory", {})
    rows.append(("step, uncapped bf16", _fmt(mem["uncapped_s"], " s") if "uncapped_s" in mem else _missing(mem),
                 "-", ""))
    for cap, target in (("24", mem.get("target_24_s")), ("16", None)) if mem.get("caps", True) else ():
        best = mem.get(f"best_{cap}")
        value = f"{best['seconds']} s ({best['mode']}, peak {best.get('peak_gib')} GiB)" if best else "no mode ran"
        rows.append((f"step under a {cap} GiB cap", value, _target(target) if cap == "24" else "runs",
                     _verdict(best and best["seconds"], target) if cap == "24" else ("met" if best else "not met")))
    vae = stages.get("vae_decode", {})
    rows.append(("VAE decode", f"{vae['seconds']} s, peak {_fmt(vae.get('peak_gib'))} GiB" if "seconds" in vae
                 else _missing(vae), "-", ""))
    job = stages.get("job", {})
    timings = ", ".join(f"{k} {v}" for k, v in job.get("timings", {}).items())
    rows.append(("fast-preset job", f"{job['total_s']} s ({timings})" if "total_s" in job else _missing(job), "<= 30 s",
                 _verdict(job.get("total_s"), 30.0)))
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
