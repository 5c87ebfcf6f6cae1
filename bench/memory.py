"""Peak GPU memory and time per step for each memory mode, under caps that emulate smaller cards.

    python bench/memory.py                        # CUDA: 14B at 512p, uncapped, 24 GB and 16 GB caps
    python bench/memory.py --device cpu --small   # the benchmark code itself

Modes: bf16 resident, fp8 storage (layerwise casting), group offload (CUDA
streams), fp8 + group offload. A cap is `set_per_process_memory_fraction` on the
larger GPU; a mode that does not fit is reported as out of memory.
"""

from __future__ import annotations

import argparse
import gc
from pathlib import Path

import torch
from common import (
    CPU_CONFIG,
    SCAIL2_14B_CONFIG,
    emit,
    environment,
    forward_inputs,
    memory_cap,
    random_transformer,
    time_call,
)

from backend.loaders.components import MemoryOptions, apply_memory_options

MODES = {
    "bf16": MemoryOptions(storage="bf16", offload="none"),
    "fp8": MemoryOptions(storage="fp8", offload="none"),
    "group": MemoryOptions(storage="bf16", offload="group"),
    "fp8+group": MemoryOptions(storage="fp8", offload="group"),
}


def run_mode(name, config, size, device, cap_gb, repeats, out, base):
    record = base | {"mode": name, "cap_gb": cap_gb, "size": "x".join(map(str, size))}
    model = None
    try:
        with memory_cap(device, cap_gb):
            # Weights start in CPU memory, as after loading; the mode decides what goes to the GPU.
            model = random_transformer(config, torch.device("cpu"), torch.bfloat16)
            apply_memory_options(model, device, MODES[name])
            inputs = forward_inputs(config, *size, device, torch.bfloat16)
            with torch.no_grad():
                seconds = time_call(lambda: model(**inputs), device, repeats=repeats)
            record["seconds_per_step"] = round(seconds, 3)
            if device.type == "cuda":
                record["peak_gib"] = round(torch.cuda.max_memory_allocated(device) / 2**30, 2)
    except torch.OutOfMemoryError:
        record["error"] = "out of memory"
    finally:
        del model
        gc.collect()
    emit(record, out)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true")
    parser.add_argument("--modes", nargs="*", default=list(MODES))
    parser.add_argument("--caps", nargs="*", type=float, default=[0, 24, 16], help="GiB; 0 = uncapped")
    parser.add_argument("--repeats", type=int, default=2)
    parser.add_argument("--out", type=Path)
    args = parser.parse_args()

    device = torch.device(args.device)
    config = CPU_CONFIG if args.small else SCAIL2_14B_CONFIG
    size = (128, 224, 9) if args.small else (512, 896, 81)
    caps = args.caps if device.type == "cuda" else [0]
    base = environment(device) | {"bench": "memory"}
    for cap in caps:
        for mode in args.modes:
            run_mode(mode, config, size, device, cap or None, args.repeats, args.out, base)


if __name__ == "__main__":
    main()
