"""One SCAIL-2 forward on 1, 2, 4 and 8 GPUs with context parallelism (`python -m backend ... --gpus N`).

    python bench/scaling.py                                  # CUDA: the 14B network at 512p, 81 frames
    python bench/scaling.py --device cpu --small --gpus 1 2  # the benchmark code itself, on gloo CPU ranks

Each count runs as that many ranks under torch's launcher, the same way `--gpus N` does (random
weights, the same on every rank; the scheme `backend.parallel.context` picks). A count the
machine lacks is skipped with one line. Prints one JSON line per count (seconds per forward,
speed-up and efficiency against one rank) and appends them to --out when given.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
from pathlib import Path

import torch
from common import CPU_CONFIG, REPO, SCAIL2_14B_CONFIG, emit, environment, forward_inputs, random_transformer, \
    sequence_length, time_call

SIZES = {"512p": (512, 896, 81), "704p": (704, 1280, 81)}
CPU_SIZES = {"cpu-128x224x9": (128, 224, 9)}


def available(device: str) -> int:
    return torch.cuda.device_count() if device == "cuda" else os.cpu_count() or 1


def run_count(args, gpus: int) -> dict | None:
    """One count as `gpus` ranks; rank 0's record, or None when they failed."""
    from backend.parallel.launch import DEVICE_ENV

    env = dict(os.environ, **{DEVICE_ENV: args.device})
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
    env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // gpus)))
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={gpus}", __file__,
               "--rank", "--device", args.device, "--size", args.size, "--repeats", str(args.repeats)]
    if args.small:
        command.append("--small")
    if args.attention:
        command += ["--attention", args.attention]
    run = subprocess.run(command, env=env, capture_output=True, text=True)
    records = [json.loads(line) for line in run.stdout.splitlines() if line.startswith("{")]
    if run.returncode or not records:
        print(f"{gpus} ranks failed: {(run.stderr.strip().splitlines() or ['no output'])[-1]}", file=sys.stderr)
        return None
    return records[0]


def rank_main(args) -> None:
    """Inside one rank: time the forward; rank 0 prints the record."""
    import torch.distributed as dist

    from backend.parallel.context import attention_backend, choose_config, describe_config, enable_context_parallel
    from backend.parallel.ranks import join_group

    device = join_group(int(os.environ["LOCAL_RANK"]))
    world = dist.get_world_size()
    config = CPU_CONFIG if args.small else SCAIL2_14B_CONFIG
    height, width, frames = (CPU_SIZES if args.small else SIZES)[args.size]
    torch.manual_seed(0)
    model = random_transformer(config, device, torch.bfloat16)
    if args.attention:
        model.set_attention_backend(args.attention)
    scheme = None
    if world > 1:
        cp = choose_config(world, config["num_heads"], attention_backend(model))
        enable_context_parallel(model, cp)
        scheme = describe_config(cp)
    inputs = forward_inputs(config, height, width, frames, device, torch.bfloat16)

    def forward():
        with torch.no_grad():
            model(**inputs)
        dist.barrier()

    seconds = time_call(forward, device, repeats=args.repeats)
    if dist.get_rank() == 0:
        print(json.dumps({"gpus": world, "size": args.size, "tokens": sequence_length(height, width, frames),
                          "scheme": scheme, "seconds": round(seconds, 4)}), flush=True)
    dist.destroy_process_group()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--device", choices=["cuda", "cpu"], default="cuda" if torch.cuda.is_available() else "cpu")
    parser.add_argument("--small", action="store_true", help="toy config and size (checks the code on a CPU)")
    parser.add_argument("--size", help="512p or 704p (default 512p; cpu-128x224x9 with --small)")
    parser.add_argument("--gpus", type=int, nargs="*", default=[1, 2, 4, 8], help="rank counts to run")
    parser.add_argument("--attention", help="diffusers attention backend (default: diffusers' own)")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--out", type=Path, help="append JSON lines here")
    parser.add_argument("--rank", action="store_true", help=argparse.SUPPRESS)  # set for the ranks themselves
    args = parser.parse_args()
    args.size = args.size or ("cpu-128x224x9" if args.small else "512p")
    if args.rank:
        rank_main(args)
        return

    base = environment(torch.device(args.device)) | {"bench": "scaling"}
    single = None
    for gpus in args.gpus:
        if gpus > available(args.device):
            print(f"skip {gpus} GPUs: this machine has {available(args.device)} {args.device} device(s)")
            continue
        record = run_count(args, gpus)
        if record is None:
            continue
        if gpus == 1:
            single = record["seconds"]
        if single:
            record |= {"speedup": round(single / record["seconds"], 3),
                       "efficiency": round(single / record["seconds"] / gpus, 3)}
        emit(base | record, args.out)


if __name__ == "__main__":
    main()
