"""Every GPU speed figure of issue 18 in one command that ends within its budget (default 8.5 min).

    python bench/gpu_suite.py --out build/gpu_suite.json --results-md build/RESULTS_gpu.md   # CUDA
    python bench/gpu_suite.py --toy                                                          # CPU, toy sizes

Stages: environment; bf16 and fp8 matmul peaks; the 14B forward at 512p per attention
backend and with the fast paths (fp8 compute, regional compile); memory modes under
24 and 16 GiB caps; the Wan VAE decode; a fast-preset job end to end; the 704p forward.
All weights are random (speed does not depend on their values). Each stage has a
budget; what does not fit the time left is recorded as "skipped: budget".

How a figure is taken (bench/suite_runner.py, `timed_calls`): a warm-up call that is never
reported, then at least 3 timed calls with the device synchronised before and after each; the
figure is their median, with the spread beside it, and a backend or variant is chosen by its
median. A timed transformer call is exactly one denoising step: the segment's conditioning is
embedded once beforehand, as the sampler does. Memory is judged as a card would: the allocator's
peak reservation plus what the device holds outside it (CUDA context, workspaces), and every
capped mode runs in a fresh process, so no mode's cache or workspace helps the next.
"""

from __future__ import annotations

import argparse
import json
import math
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import torch
from common import (
    CPU_CONFIG,
    REPO,
    SCAIL2_14B_CONFIG,
    device_peak,
    environment,
    forward_flops,
    forward_inputs,
    fp8_matmul_peak,
    matmul_peak,
    memory_cap,
    random_transformer,
    sequence_length,
    synchronize,
)
from suite_runner import Suite, forward_figures, markdown_section, print_table, timed_calls, timed_step

from backend.loaders.components import MemoryOptions, apply_memory_options

SIZES = {"512p": (512, 896, 81), "704p": (704, 1280, 81)}
TOY_SIZES = {"512p": (64, 128, 5), "704p": (96, 160, 5)}  # multiples of 32, as jobs need
# Attention backends that materialise the [s, s] score matrix when not compiled: hours or OOM at 49k tokens.
QUADRATIC_MEMORY = {"_native_math", "flex"}
PREFERRED = ("_flash_3", "flash", "sage", "_native_cudnn", "_native_flash", "native", "_native_efficient")
FAST_VARIANTS = {"fp8": (True, False), "compile": (False, True), "fp8+compile": (True, True)}
MEMORY_RUNS = (  # (cap GiB or None, storage, offload), the targets first
    (None, "bf16", "none"), (24, "fp8", "none"), (16, "fp8", "group"), (24, "bf16", "group"),
    (16, "bf16", "group"), (24, "fp8", "group"), (None, "fp8", "none"), (24, "fp8", "model"),
    (None, "bf16", "group"), (None, "bf16", "model"), (24, "fp8c", "none"), (16, "fp8c", "group"),
)
# "fp8c": fp8 compute (`--compute fp8`), whose weights are fp8 too; the others are `--storage` values.


def build_variant(config: dict, device: torch.device, variant: str) -> torch.nn.Module:
    """A random bf16 transformer on `device` with the variant's fast paths ("eager" has none)."""
    fp8, compiled = FAST_VARIANTS.get(variant, (False, False))
    # The fast paths come from other modules; a missing one is an ImportError the caller records.
    enable_fp8_compute = compile_blocks = None
    if fp8:
        from backend.models.fp8_linear import enable_fp8_compute
    if compiled:
        from backend.models.compile import compile_blocks
    model = random_transformer(config, device, torch.bfloat16)
    if enable_fp8_compute:
        model.fp8_layers = enable_fp8_compute(model)
    if compile_blocks:
        compile_blocks(model)
    return model


def memory_mode(config: dict, sizes: dict, device: torch.device, suite: Suite, mode: dict) -> dict:
    """One denoising step of a random transformer in a memory mode (storage, offload, cap), timed.

    Weights are made on the GPU (seconds) and the mode applied uncapped; offloaded ones then live
    in CPU memory, as after loading. The cap holds while the step runs; the peak is what a card of
    that size would have had to hold (`device_peak`).
    """
    height, width, frames = sizes["512p"]
    inputs = forward_inputs(config, height, width, frames, device, torch.bfloat16)
    model = random_transformer(config, device, torch.bfloat16)
    if mode["offload"] != "none":
        model.to("cpu")
    fp8_compute = mode["storage"] == "fp8c"
    memory = MemoryOptions(storage="bf16" if fp8_compute else mode["storage"], offload=mode["offload"],
                           compute="fp8" if fp8_compute else "bf16", attention_backend=mode["backend"])
    apply_memory_options(model, device, memory)
    entry: dict = {}
    with memory_cap(device, mode["cap"]):
        if mode["offload"] == "model":  # Components.sampling() moves it over once per segment
            start = time.perf_counter()
            model.to(device)
            synchronize(device)
            entry["move_s"] = round(time.perf_counter() - start, 2)
        entry.update(timed_step(model, inputs, device, suite))
        if device.type == "cuda":
            entry.update(device_peak(device))
            if mode["cap"]:
                entry["fits_cap"] = entry["device_peak_gib"] <= mode["cap"]
    return entry


class Stages:
    def __init__(self, args, suite: Suite, device: torch.device):
        self.args, self.suite, self.device = args, suite, device
        self.config = CPU_CONFIG if args.toy else SCAIL2_14B_CONFIG
        self.sizes = TOY_SIZES if args.toy else SIZES

    @property
    def best(self) -> dict:
        """The 512p run with the lowest median so far (backend and variant), or native eager."""
        runs = [r for r in self.suite.stage("forward_512p").get("runs", []) if "seconds" in r]
        return min(runs, key=lambda r: r["seconds"]) if runs else {"backend": "native", "variant": "eager"}

    def peak(self) -> float | None:
        tflops = self.suite.stage("matmul").get("bf16_tflops")
        return tflops * 1e12 if tflops else None

    def environment(self, record: dict) -> None:
        record.update(environment(self.device))

    def matmul(self, record: dict) -> None:
        record["bf16_tflops"] = round(matmul_peak(self.device, torch.bfloat16) / 1e12, 3)  # a CPU's is < 0.1
        try:
            record["fp8_tflops"] = round(fp8_matmul_peak(self.device) / 1e12, 1)
        except Exception as exc:  # no fp8 tensor cores here
            record["fp8"] = f"skipped: {str(exc).splitlines()[0][:200]}"

    def backends(self) -> list[str]:
        from backend.tools.doctor import attention_backends

        names = attention_backends(self.device.type == "cuda")
        return sorted(names, key=lambda n: PREFERRED.index(n) if n in PREFERRED else len(PREFERRED))

    def forward(self, size: str, record: dict) -> None:
        height, width, frames = self.sizes[size]
        tokens = sequence_length(height, width, frames)
        record.update(size=f"{height}x{width}x{frames}", tokens=tokens, target_s=6.6 if size == "512p" else None)
        runs = record["runs"] = []
        inputs = forward_inputs(self.config, height, width, frames, self.device, torch.bfloat16)
        # Time of one forward, to judge what still fits: 4 s per PFLOP (250 TFLOP/s) until one is measured.
        estimate = 4 * forward_flops(tokens, self.config) / 1e15
        eager = self.backends() if size == "512p" else [self.best["backend"]]
        model = build_variant(self.config, self.device, "eager")
        for backend in eager:
            entry = {"backend": backend, "variant": "eager"}
            if self.device.type == "cuda" and backend in QUADRATIC_MEMORY:
                entry["status"] = "skipped: materialises the attention matrix uncompiled (O(s^2) memory)"
                runs.append(entry)
                continue

            def run(entry, backend=backend):
                model.set_attention_backend(backend)
                entry.update(forward_figures(timed_step(model, inputs, self.device, self.suite),
                                             tokens, self.config, self.peak()))
            self.suite.attempt(runs, entry, run, need_s=2.2 * estimate)  # the warm-up and one timed call at least
            estimate = entry.get("seconds", estimate)
        del model
        backend = self.best["backend"] if size == "704p" else min(
            (r for r in runs if "seconds" in r), key=lambda r: r["seconds"], default={"backend": "native"}
        )["backend"]
        variants = list(FAST_VARIANTS)
        if size == "704p":  # only the fastest combination found at 512p
            variants = [self.best["variant"]] if self.best["variant"] != "eager" else []
        for variant in variants:
            if variant != "fp8" and self.args.toy and not self.args.compile:
                runs.append({"backend": backend, "variant": variant,
                             "status": "skipped: --toy without --compile (inductor on a CPU takes minutes)"})
                continue

            def run(entry, variant=variant):
                fast = build_variant(self.config, self.device, variant)
                fast.set_attention_backend(backend)
                entry.update(forward_figures(timed_step(fast, inputs, self.device, self.suite),
                                             tokens, self.config, self.peak()))
            # Compiling 40 blocks costs about a minute the first time (less from the on-disk cache).
            need = 3 * estimate + (0 if variant == "fp8" or self.args.toy else 60)
            self.suite.attempt(runs, {"backend": backend, "variant": variant}, run, need_s=need)
        ok = [r for r in runs if "seconds" in r]
        if not ok:
            raise RuntimeError(f"no run succeeded (first: {runs[0].get('status')})")
        if ok:
            best = min(ok, key=lambda r: r["seconds"])
            record["best"] = {k: best[k] for k in ("backend", "variant", "seconds", "timed_calls")}
            if record["target_s"]:
                record["meets_target"] = best["seconds"] <= record["target_s"]

    def memory(self, record: dict) -> None:
        from backend.tools.doctor import transformer_params

        height, width, frames = self.sizes["512p"]
        params = transformer_params() if not self.args.toy else None
        backend = self.best["backend"]
        record.update(size=f"{height}x{width}x{frames}", attention_backend=backend)
        runs = record["runs"] = []
        # Caps exist on CUDA only; on the CPU every mode runs once, uncapped, in this process.
        plan = MEMORY_RUNS if self.device.type == "cuda" else [
            (None, storage, offload) for storage in ("bf16", "fp8", "fp8c") for offload in ("none", "model", "group")]
        record["caps"] = self.device.type == "cuda"
        for cap, storage, offload in plan:
            entry = {"mode": f"{storage}+{offload}", "cap_gib": cap}
            weights_gib = params * (2 if storage == "bf16" else 1) / 2**30 if params else 0
            if cap and offload != "group" and weights_gib > cap:
                entry["status"] = f"skipped: the weights alone ({weights_gib:.1f} GiB) exceed the cap"
                runs.append(entry)
                continue
            mode = {"cap": cap, "storage": storage, "offload": offload, "backend": backend}
            if cap or self.args.fresh_processes:
                def run(entry, mode=mode):
                    entry.update(self._memory_child(mode))
            else:
                def run(entry, mode=mode):
                    entry.update(memory_mode(self.config, self.sizes, self.device, self.suite, mode))
            self.suite.attempt(runs, entry, run, need_s=45 if not self.args.toy else 1)
        ok = [r for r in runs if "seconds" in r]
        if not ok:
            raise RuntimeError(f"no mode ran (first: {runs[0].get('status')})")
        uncapped = next((r for r in ok if r["cap_gib"] is None and r["mode"] == "bf16+none"), None)
        if uncapped:
            record["uncapped"] = uncapped
            record["uncapped_s"] = uncapped["seconds"]
            record["target_24_s"] = round(1.5 * uncapped["seconds"], 3)
        for cap in (24, 16):  # a mode counts for a card when the card could have held its whole peak
            fits = [r for r in ok if r["cap_gib"] == cap and r.get("fits_cap")]
            if fits:
                record[f"best_{cap}"] = min(fits, key=lambda r: r["seconds"])

    def _memory_child(self, mode: dict) -> dict:
        """One memory mode in a fresh process (this script with --memory-child), within the stage's time."""
        with tempfile.TemporaryDirectory() as tmp:
            out = Path(tmp) / "mode.json"
            argv = [sys.executable, str(Path(__file__).resolve()), "--memory-child", json.dumps(mode),
                    "--out", str(out), "--device", str(self.device), "--budget-s", f"{max(self.suite.left(), 1):.0f}"]
            if self.args.toy:
                argv.append("--toy")
            try:
                run = subprocess.run(argv, capture_output=True, text=True, timeout=max(self.suite.left(), 1))
            except subprocess.TimeoutExpired:
                return {"status": "skipped: budget (the mode's process was stopped at the stage's deadline)"}
            if not out.exists():
                lines = (run.stderr or run.stdout or "no output").strip().splitlines() or ["no output"]
                return {"status": f"error: the mode's process exited {run.returncode}: {lines[-1]}"[:300]}
            return json.loads(out.read_text()) | {"fresh_process": True}

    def vae_decode(self, record: dict) -> None:
        from diffusers import AutoencoderKLWan
        from pipeline import _random_on

        from backend.models.encoders import VideoVAE
        from backend.models.tiny import TINY_VAE_CONFIG

        height, width, frames = self.sizes["512p"]
        with torch.device("meta"):
            model = AutoencoderKLWan(**(TINY_VAE_CONFIG if self.args.toy else {}))
        vae = VideoVAE(_random_on(model, self.device, torch.float32))
        latents = torch.randn(vae.z_dim, (frames - 1) // 4 + 1, height // 8, width // 8, device=self.device)
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)
        record.update(size=f"{height}x{width}x{frames}", dtype="float32")
        record.update(timed_calls(lambda: vae.decode(latents), self.device, self.suite))
        if self.device.type == "cuda":
            record.update(device_peak(self.device))

    def job(self, record: dict) -> None:
        import json

        from pipeline import full_size_components, synthetic_clip

        from backend.loaders.components import load_components
        from backend.pipeline.generate import GenerationJob
        from backend.pipeline.inputs import prepare_inputs
        from protocol import JobSpec

        height, width, frames = self.sizes["512p"]
        best = dict(self.best)
        start = time.perf_counter()
        if self.args.toy:  # the tiny profile's own transformer: no fast path applied
            components = load_components("tiny", self.device, MemoryOptions(dtype=torch.float32))
            best["variant"] = "eager"
        else:
            components = full_size_components(self.device, MemoryOptions())
            if best["variant"] != "eager":  # the fastest forward found above, if it was a fast path
                del components.transformer
                components.transformer = build_variant(self.config, self.device, best["variant"])
        components.transformer.set_attention_backend(best["backend"])
        record.update(setup_s=round(time.perf_counter() - start, 2), attention_backend=best["backend"],
                      variant=best["variant"], size=f"{height}x{width}x{frames}", preset="fast", target_s=30.0)
        with tempfile.TemporaryDirectory() as tmp:
            driving, reference = synthetic_clip(Path(tmp), frames)
            spec = JobSpec(driving=str(driving), reference=str(reference), preset="fast", seed=0,
                           height=height, width=width)
            folders = iter(Path(tmp) / f"job{i}" for i in range(100))
            last: list[Path] = []

            def one_job():  # a whole job into a fresh folder: every run generates, none resumes
                last[:] = [next(folders)]
                GenerationJob(prepare_inputs(spec), components, last[0]).run()
            record.update(timed_calls(one_job, self.device, self.suite))
            manifest = json.loads((last[0] / "manifest.json").read_text())
        if "seconds" in record:
            record["total_s"] = record["seconds"]
            record["meets_target"] = record["total_s"] <= 30.0
        record["timings"] = {k: round(v, 2) for k, v in manifest["timings"].items()}
        record["frames"] = len(manifest["frames"])
        record["peak_gib"] = round(manifest["peak_memory_bytes"] / 2**30, 2)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--toy", action="store_true", help="CPU, toy config and sizes (checks the code)")
    parser.add_argument("--device", help="default: cuda, or cpu with --toy")
    parser.add_argument("--budget-s", type=float, default=510.0, help="global deadline in seconds")
    parser.add_argument("--compile", action="store_true", help="with --toy: also run the compiled variants")
    parser.add_argument("--out", type=Path, default=REPO / "build" / "gpu_suite.json")
    parser.add_argument("--results-md", type=Path, help="append a dated section with the figures here")
    parser.add_argument("--note", default="", help="a line for the RESULTS section")
    parser.add_argument("--fresh-processes", action="store_true",
                        help="run every memory mode in a fresh process (capped modes always do)")
    parser.add_argument("--memory-child", help=argparse.SUPPRESS)  # JSON of one mode: the suite's own child
    args = parser.parse_args()

    device = torch.device(args.device or ("cpu" if args.toy else "cuda"))
    if device.type == "cuda" and not torch.cuda.is_available():
        parser.error("no CUDA device here; use --toy for the CPU check")
    if args.memory_child:
        suite = Suite(args.out.with_suffix(".suite.json"), args.budget_s, device, {"suite": "memory_child"})
        entry = memory_mode(CPU_CONFIG if args.toy else SCAIL2_14B_CONFIG, TOY_SIZES if args.toy else SIZES,
                            device, suite, json.loads(args.memory_child))
        args.out.write_text(json.dumps(entry), encoding="utf-8")
        return
    scale = 0.02 if args.toy else 1.0  # stage budgets (full size), scaled for the toy run
    suite = Suite(args.out, args.budget_s, device, {"suite": "gpu_suite", "toy": args.toy})
    stages = Stages(args, suite, device)
    plan = [  # name, function, seconds needed to start, budget
        ("environment", stages.environment, 0, 10),
        ("matmul", stages.matmul, 5, 30),
        ("forward_512p", lambda r: stages.forward("512p", r), 30, 180),
        ("memory", stages.memory, 45, 150),
        ("vae_decode", stages.vae_decode, 15, 40),
        # The fast preset's 8 steps at the fastest forward found, plus setup, encode and decode: a
        # warm-up job and at least one timed job.
        ("job", stages.job, lambda: 2 * (8 * stages.best.get("seconds", 8.0) + 15), 120),
        ("forward_704p", lambda r: stages.forward("704p", r), 30, 120),
    ]
    for name, fn, need, budget in plan:
        suite.run(name, fn, need_s=lambda need=need: math.ceil((need() if callable(need) else need) * scale),
                  budget_s=budget)
    if args.results_md:
        with open(args.results_md, "a", encoding="utf-8") as f:
            f.write(markdown_section(suite.results, args.note))
    print_table(suite.results)


if __name__ == "__main__":
    main()
