"""`generate --gpus N` and `serve --gpus N`: the same command line again, as N ranks under torch's launcher.

The launching process checks what it can without a model (the count, the device, options that
cannot be shared), then runs `python -m torch.distributed.run --standalone --nproc-per-node N
-m backend.as_rank ARGS...` and waits; its exit status is rank 0's command's. The
launcher is stopped with this process: SIGINT and SIGTERM are passed on, and on Linux it gets
SIGTERM if this process dies, so no rank outlives the command that started it.

Kept free of torch imports at module level: the parser is built with it.
"""

from __future__ import annotations

import argparse
import os
import signal
import subprocess
import sys
import tempfile
from pathlib import Path

from ..errors import UserError

DEVICE_ENV = "SCAIL2_RANKS_DEVICE"  # "cuda" or "cpu": set for the ranks, and marks a process as one
STATUS_ENV = "SCAIL2_RANK0_STATUS"  # the file rank 0 writes its command's exit status to
STRATEGY_ENV = "SCAIL2_CONTEXT_PARALLEL"  # auto (default), ulysses or ring: see parallel.context
EXIT_BAD_INPUT = 2
REPO = Path(__file__).resolve().parents[2]


class LaunchError(UserError):
    """--gpus cannot run as asked (one line)."""


def add_gpus_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--gpus", type=int, default=1, metavar="N",
                        help="split each denoising step across N GPUs (context parallelism, one process per "
                             "GPU; pick them with CUDA_VISIBLE_DEVICES); with --device cpu, N CPU processes")


def wants_launch(args: argparse.Namespace) -> bool:
    """Whether this command line is to start ranks (not when it already runs as one)."""
    return getattr(args, "gpus", 1) != 1 and DEVICE_ENV not in os.environ


def ranks_device(args: argparse.Namespace) -> str:
    """"cuda" or "cpu" for the ranks; LaunchError for what several ranks cannot do."""
    import torch

    if args.gpus < 1:
        raise LaunchError(f"--gpus must be at least 1, got {args.gpus}")
    device = args.device or ("cuda" if torch.cuda.is_available() else "cpu")
    if device not in ("cuda", "cpu"):
        raise LaunchError(f"--gpus takes --device cuda or cpu, not {device}; choose the GPUs with "
                          "CUDA_VISIBLE_DEVICES")
    if device == "cuda" and torch.cuda.device_count() < args.gpus:
        raise LaunchError(f"--gpus {args.gpus}: this machine has {torch.cuda.device_count()} CUDA GPU(s)")
    if args.storage != "bf16" or args.offload != "none" or getattr(args, "compute", "bf16") != "bf16":
        # The ranks receive rank 0's bf16 weights as they are; fp8 layers are not among them.
        raise LaunchError("--gpus keeps the whole model on every GPU: it does not combine with --storage fp8, "
                          "--compute fp8 or --offload")
    return device


def launch(argv: list[str], args: argparse.Namespace) -> int:
    """Run `argv` (the whole command line, --gpus included) as `args.gpus` ranks; rank 0's exit status."""
    try:
        device = ranks_device(args)
    except LaunchError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    with tempfile.TemporaryDirectory(prefix="scail2-ranks-") as folder:
        status = Path(folder) / "status"
        env = dict(os.environ, **{DEVICE_ENV: device, STATUS_ENV: str(status)})
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // args.gpus)))
        command = [sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={args.gpus}",
                   "-m", "backend.as_rank", *argv]
        code = _run(command, env)
        if status.is_file():
            return int(status.read_text() or 1)
        return code or 1


def _run(command: list[str], env: dict) -> int:
    """The launcher as a child that stops with this process."""
    child = subprocess.Popen(command, env=env, preexec_fn=_die_with_parent if sys.platform == "linux" else None)

    def pass_on(signum, frame):
        child.send_signal(signum)

    previous = {s: signal.signal(s, pass_on) for s in (signal.SIGINT, signal.SIGTERM)}
    try:
        return child.wait()
    finally:
        for s, handler in previous.items():
            signal.signal(s, handler)


def _die_with_parent() -> None:
    import ctypes

    PR_SET_PDEATHSIG = 1
    ctypes.CDLL("libc.so.6", use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGTERM)
