"""Shared pieces of the benchmarks: random-weight models, synthetic inputs, timing, FLOP counts.

Speed does not depend on weight values, so models get random weights made
directly on the device (the 14B model never exists on the CPU).
"""

from __future__ import annotations

import json
import platform
import statistics
import sys
import time
from contextlib import contextmanager
from datetime import date
from pathlib import Path

import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from backend.models.transformer_scail2 import SCAIL2_14B_CONFIG, SCAIL2Transformer3DModel  # noqa: E402

# A small configuration for CPU runs of the benchmark code itself (not for figures that matter).
CPU_CONFIG = dict(SCAIL2_14B_CONFIG, dim=256, ffn_dim=512, num_heads=2, num_layers=2, text_dim=64, freq_dim=64)
CONTEXT_TOKENS = 257 + 512


def random_transformer(config: dict, device: torch.device, dtype: torch.dtype) -> SCAIL2Transformer3DModel:
    """The network with N(0, 0.02) weights created in place on `device`."""
    with torch.device("meta"):
        model = SCAIL2Transformer3DModel(**config)
    model.to_empty(device=device)
    with torch.no_grad():
        for param in model.parameters():
            param.normal_(0.0, 0.02)
    return model.to_inference_dtype(dtype).eval().requires_grad_(False)


def forward_inputs(config: dict, height: int, width: int, frames: int, device, dtype) -> dict:
    """Keyword arguments of one forward at a pixel size and frame count (batch 1)."""
    t_lat, h, w = (frames - 1) // 4 + 1, height // 8, width // 8
    g = torch.Generator(device="cpu").manual_seed(0)

    def rnd(*shape):
        return torch.randn(*shape, generator=g).to(device, dtype)

    return dict(
        x=[rnd(16, t_lat, h, w)],
        pose_latents=[rnd(16, t_lat, h // 2, w // 2)],
        driving_masks=[rnd(28, t_lat, h // 2, w // 2).abs().clamp(max=1)],
        ref_latents=[rnd(16, 1, h, w)],
        ref_masks=[rnd(28, 1 + t_lat, h, w).abs().clamp(max=1)],
        t=torch.tensor([500.0], device=device),
        context=[rnd(40, config["text_dim"])],
        clip_fea=rnd(1, 257, 1280),
    )


def sequence_length(height: int, width: int, frames: int) -> int:
    t_lat, h, w = (frames - 1) // 4 + 1, height // 16, width // 16
    return (1 + t_lat) * h * w + t_lat * (h // 2) * (w // 2)


def forward_flops(tokens: int, config: dict) -> float:
    """Analytic FLOPs of one forward (issue 8's count): projections, FFN, self- and cross-attention."""
    d, f, layers = config["dim"], config["ffn_dim"], config["num_layers"]
    s = tokens
    return layers * (s * (12 * d * d + 4 * d * f) + 4 * s * s * d + 4 * s * CONTEXT_TOKENS * d)


def synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def time_call(fn, device: torch.device, warmup: int = 1, repeats: int = 3) -> float:
    """Median wall time of `fn()` in seconds, after warm-up calls."""
    for _ in range(warmup):
        fn()
    synchronize(device)
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        fn()
        synchronize(device)
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def matmul_peak(device: torch.device, dtype: torch.dtype, n: int = 8192) -> float:
    """Measured dense matmul throughput in FLOP/s (the ceiling the network is compared against)."""
    if device.type == "cpu":
        n = 1024
    a = torch.randn(n, n, device=device, dtype=dtype)
    b = torch.randn(n, n, device=device, dtype=dtype)
    seconds = time_call(lambda: a @ b, device, warmup=2, repeats=5)
    return 2 * n**3 / seconds


def fp8_matmul_peak(device: torch.device, n: int = 8192) -> float:
    """`torch._scaled_mm` throughput (e4m3 operands, row-wise float32 scales, bf16 out) in FLOP/s.

    Raises on a CPU (its figure says nothing) and where `--compute fp8` would be refused.
    """
    from backend.models.fp8_linear import fp8_compute_support

    reason = "the CPU's _scaled_mm is no fp8 tensor core" if device.type != "cuda" else fp8_compute_support(device)
    if reason:
        raise RuntimeError(reason)
    a = torch.randn(n, n, device=device).to(torch.float8_e4m3fn)
    b = torch.randn(n, n, device=device).to(torch.float8_e4m3fn).t()  # column-major, as _scaled_mm wants
    scale_a = torch.ones(n, 1, device=device, dtype=torch.float32)
    scale_b = torch.ones(1, n, device=device, dtype=torch.float32)
    seconds = time_call(lambda: torch._scaled_mm(a, b, scale_a=scale_a, scale_b=scale_b, out_dtype=torch.bfloat16),
                        device, warmup=2, repeats=5)
    return 2 * n**3 / seconds


def device_memory(device: torch.device) -> dict:
    """What the whole device holds now, as the driver sees it, against what torch's allocator holds.

    `outside_allocator_bytes` is the CUDA context, cuBLAS/cuDNN workspaces and anything else not in
    torch's caching allocator: a per-process memory fraction never counts it, a real card does.
    """
    free, total = torch.cuda.mem_get_info(device)
    reserved = torch.cuda.memory_reserved(device)
    return {"used_bytes": total - free, "total_bytes": total, "reserved_bytes": reserved,
            "outside_allocator_bytes": max(0, total - free - reserved)}


@contextmanager
def memory_cap(device: torch.device, cap_gib: float | None):
    """Emulate a card of `cap_gib` GiB: torch's allocator may reserve the cap less what the device
    already holds outside it (the CUDA context and workspaces). The limit is lifted after."""
    if device.type != "cuda":
        yield
        return
    torch.cuda.empty_cache()
    before = device_memory(device)
    total = before["total_bytes"]
    allowed = cap_gib * 2**30 - before["outside_allocator_bytes"] if cap_gib else total
    torch.cuda.set_per_process_memory_fraction(max(0.0, min(1.0, allowed / total)), device)
    torch.cuda.reset_peak_memory_stats(device)
    try:
        yield
    finally:
        torch.cuda.set_per_process_memory_fraction(1.0, device)
        torch.cuda.empty_cache()


def device_peak(device: torch.device) -> dict:
    """The peak a card would have had to hold since the last `reset_peak_memory_stats`: the
    allocator's peak reservation plus what lies outside the allocator now (GiB, 2 decimals)."""
    now = device_memory(device)
    reserved_peak = torch.cuda.max_memory_reserved(device)
    gib = 2**30
    return {"allocated_peak_gib": round(torch.cuda.max_memory_allocated(device) / gib, 2),
            "reserved_peak_gib": round(reserved_peak / gib, 2),
            "outside_allocator_gib": round(now["outside_allocator_bytes"] / gib, 2),
            "device_peak_gib": round((reserved_peak + now["outside_allocator_bytes"]) / gib, 2)}


def package_version(name: str) -> str:
    import importlib.metadata

    try:
        return importlib.metadata.version(name)
    except importlib.metadata.PackageNotFoundError:
        return "not installed"


def environment(device: torch.device) -> dict:
    info = {
        "date": date.today().isoformat(),
        "python": platform.python_version(),
        "torch": torch.__version__,
        "diffusers": package_version("diffusers"),
        "transformers": package_version("transformers"),
        "device": torch.cuda.get_device_name(device) if device.type == "cuda" else platform.processor() or "cpu",
        "command": " ".join(sys.argv),
    }
    if device.type == "cuda":
        info["capability"] = ".".join(map(str, torch.cuda.get_device_capability(device)))
        info["cuda"] = torch.version.cuda
        info["total_gib"] = round(torch.cuda.get_device_properties(device).total_memory / 2**30, 1)
    else:
        info["threads"] = torch.get_num_threads()
    return info


def emit(record: dict, out: Path | None) -> None:
    """Print a result record as one JSON line, and append it to `out` when given."""
    line = json.dumps(record)
    print(line, flush=True)
    if out is not None:
        with open(out, "a", encoding="utf-8") as f:
            f.write(line + "\n")
