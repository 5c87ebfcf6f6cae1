"""Which attention backend is fastest here: a quick probe, recorded once per GPU and software stack.

Each backend `attention_backends` lists runs the same self-attention through diffusers'
dispatcher; one whose output strays from the default (native) backend's is wrong here and is not
chosen. The fastest correct one is recorded in `attention.json` in the user cache, keyed by the
device name and the torch and diffusers versions, so that a worker loading a model on that machine
uses it without probing again (`--attention` names one explicitly instead).
"""

from __future__ import annotations

import functools
import json
import os
import sys
import time
import warnings
from importlib import metadata
from pathlib import Path

import protocol

# bf16 attention outputs agree with float32 ones to about 1e-2 relative; a broken kernel is far off.
AGREEMENT = 3e-2
# The probe's size: one 14B layer's heads over a few thousand tokens takes milliseconds on a GPU.
GPU_PROBE = dict(tokens=8192, heads=40, head_dim=128)
CPU_PROBE = dict(tokens=512, heads=2, head_dim=64)


_CUDA_ONLY = {"_native_cudnn", "_native_efficient", "_native_flash"}


def known_attention_backends(cuda_available: bool) -> list[str] | None:
    """The backends once diffusers is imported in this process (a job or doctor imported it), else None:
    the worker's first answer (`hello`) must not wait seconds for diffusers' import."""
    if "diffusers.models.attention_dispatch" not in sys.modules:
        return None
    return attention_backends(cuda_available)


@functools.lru_cache(maxsize=2)
def attention_backends(cuda_available: bool) -> list[str]:
    """The diffusers attention backends whose requirements are met here (names for `--attention`).

    Hub backends (``*_hub``) are listed when the `kernels` package is installed; they fetch
    their kernels from the Hugging Face Hub on first use.
    """
    try:
        from diffusers.models import attention_dispatch as dispatch
    except Exception:
        return ["native"]
    registered = getattr(getattr(dispatch, "_AttentionBackendRegistry", None), "_backends", None)
    check = getattr(dispatch, "_check_attention_backend_requirements", None)
    if registered is None or check is None:  # a diffusers without these internals
        return ["native"]
    names = []
    for backend in dispatch.AttentionBackendName:
        if backend not in registered:
            continue
        if backend.value in _CUDA_ONLY and not cuda_available:
            continue
        try:
            check(backend)
        except Exception:
            continue
        names.append(backend.value)
    return names or ["native"]


def choices_file() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "scail2" / "attention.json"


def machine_key(device) -> str:
    import torch

    name = torch.cuda.get_device_name(device) if device.type == "cuda" else "cpu"
    return f"{name} | torch {torch.__version__} | diffusers {metadata.version('diffusers')}"


def _time_ms(fn, device, repeats: int) -> float:
    import torch

    fn()  # warm-up: kernel selection, workspace allocation
    times = []
    for _ in range(repeats):
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        start = time.perf_counter()
        fn()
        if device.type == "cuda":
            torch.cuda.synchronize(device)
        times.append((time.perf_counter() - start) * 1e3)
    return sorted(times)[len(times) // 2]


def probe_attention(device, backends: list[str], tokens: int, heads: int, head_dim: int, repeats: int = 5) -> dict:
    """Time each backend on q, k, v [1, tokens, heads, head_dim] (bf16 on CUDA, float32 on the CPU).

    Returns {"choice": fastest agreeing backend, "milliseconds": {backend: ms},
    "rejected": {backend: why}, "size": {...}}.
    """
    import torch
    from diffusers.models.attention_dispatch import dispatch_attention_fn

    dtype = torch.bfloat16 if device.type == "cuda" else torch.float32
    generator = torch.Generator(device).manual_seed(0)
    q, k, v = (torch.randn(1, tokens, heads, head_dim, device=device, dtype=dtype, generator=generator)
               for _ in range(3))
    with torch.no_grad(), warnings.catch_warnings():
        warnings.simplefilter("ignore")  # flex's note that it runs uncompiled
        reference = dispatch_attention_fn(q, k, v, backend="native").float()
        milliseconds, rejected = {}, {}
        for backend in backends:
            try:
                out = dispatch_attention_fn(q, k, v, backend=backend).float()
                error = float((out - reference).norm() / reference.norm())
                if not error <= AGREEMENT:  # NaN fails too
                    rejected[backend] = f"output differs from native by {error:.3g} (relative)"
                    continue
                milliseconds[backend] = round(_time_ms(lambda: dispatch_attention_fn(q, k, v, backend=backend),
                                                       device, repeats), 3)
            except Exception as exc:  # a backend that cannot run these shapes here is not a choice
                rejected[backend] = str(exc).strip().splitlines()[0][:200] if str(exc).strip() else type(exc).__name__
    choice = min(milliseconds, key=milliseconds.get) if milliseconds else "native"
    return {"choice": choice, "milliseconds": milliseconds, "rejected": rejected,
            "size": dict(tokens=tokens, heads=heads, head_dim=head_dim, dtype=str(dtype).removeprefix("torch."))}


def probe_and_record(device) -> dict:
    """Probe the backends usable on `device` and record the result for `recorded_choice`."""
    size = GPU_PROBE if device.type == "cuda" else CPU_PROBE
    # Hub kernels would be fetched from the network on first use: only named explicitly.
    local = [name for name in attention_backends(device.type == "cuda") if not name.endswith("_hub")]
    result = probe_attention(device, local, **size)
    path = choices_file()
    try:
        known = protocol.read_json_file(path) if path.is_file() else {}
    except protocol.ProtocolError:
        known = {}  # a damaged record is probed again
    if not isinstance(known, dict):
        known = {}
    known[machine_key(device)] = result
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
        tmp.write_text(json.dumps(known, indent=1))
        tmp.replace(path)
    except OSError:
        pass  # an unwritable cache only means probing again next time
    return result


def recorded_choice(device) -> str | None:
    """The backend an earlier probe chose on this machine and software stack, or None."""
    try:
        known = protocol.read_json_file(choices_file())
        return known[machine_key(device)]["choice"]
    except (protocol.ProtocolError, KeyError, TypeError):
        return None


def fastest_attention(device) -> str:
    """The recorded choice for `device`, probing (about a second on a GPU) when there is none."""
    return recorded_choice(device) or probe_and_record(device)["choice"]
