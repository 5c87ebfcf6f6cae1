"""One rank of a `--gpus N` run: `python -m backend.as_rank COMMAND ARGS...`, started by `launch`.

Torch's launcher sets RANK and LOCAL_RANK. Every rank joins the process group (gloo on the
CPU; on CUDA, nccl for the GPU tensors and gloo for the small headers, one group); then rank
0 runs the command line as `python -m backend` would (`leader`; the entry point hands `main` the
command-line function, so this floor never imports `cli` back up), the others follow
(`follower`) with their stdout sent to stderr, so that a worker's JSON event stream on stdout
stays rank 0's alone. Rank 0 records the command's exit status in the file launch names
(SCAIL2_RANK0_STATUS) and exits 0, so a refused input is one error line and status 2 as on
one GPU, not the launcher's failure report.
"""

from __future__ import annotations

import os
import sys
import warnings
from collections.abc import Callable
from datetime import timedelta

import torch
import torch.distributed as dist

from .launch import DEVICE_ENV, STATUS_ENV, STRATEGY_ENV

# The other ranks wait for rank 0's next header as long as a worker sits idle between jobs.
IDLE_TIMEOUT = timedelta(days=7)


def join_group(local_rank: int) -> torch.device:
    if os.environ.get(DEVICE_ENV) == "cuda":
        torch.cuda.set_device(local_rank)
        dist.init_process_group("cpu:gloo,cuda:nccl", timeout=IDLE_TIMEOUT)
        return torch.device("cuda", local_rank)
    dist.init_process_group("gloo", timeout=IDLE_TIMEOUT)
    return torch.device("cpu")


def lead(argv: list[str], run_command: Callable[[list[str]], int]) -> int:
    from .leader import start_session

    session = start_session(os.environ.get(STRATEGY_ENV, "auto"))
    try:
        try:
            return run_command(argv)
        except SystemExit as exc:  # argparse's own exits
            return exc.code if isinstance(exc.code, int) else 1
    finally:
        session.close()


def main(argv: list[str], run_command: Callable[[list[str]], int]) -> int:
    """This rank's part; `run_command` runs rank 0's command line (`backend.cli.main`)."""
    # diffusers 0.42's gather calls a torch collective deprecated in 2.13: noise the user cannot act on
    warnings.filterwarnings("ignore", message=".*all_gather_tensor.*", category=FutureWarning)
    rank, local_rank = int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"])
    device = join_group(local_rank)
    try:
        if rank == 0:
            status = lead(argv, run_command)
            with open(os.environ[STATUS_ENV], "w", encoding="utf-8") as f:
                f.write(str(status))
        else:
            sys.stdout.flush()
            os.dup2(sys.stderr.fileno(), sys.stdout.fileno())
            from .follower import follow

            follow(device)
    finally:
        dist.destroy_process_group()
    return 0

