"""`python -m backend download --plan auto|fp16|fp8|gguf-q4 --to DIR [--dry-run] [--json]`.

1. plan: the files for this GPU (`plan.make_plan`) and what is already on disk (`plan.find_present`);
2. ask the hub for each missing file's size and hash (a gated repository is refused here, in one line);
3. refuse when the disk cannot hold what is left, before a byte is fetched;
4. fetch file by file (`fetch.fetch`: resumable part files, hash checked), printing progress;
5. "done" names the folder to give as --weights (the add-on sets its Weights field and runs Check Weights).

`--dry-run` stops after 1 and never touches the network. `--json` prints `protocol.DownloadEvent`
lines. The token comes from HF_TOKEN (the add-on passes its preference that way, never on the
command line). SIGTERM, SIGINT or SIGHUP stop between chunks and keep the part file: the same
command resumes it. Exit status: 0 done, 2 refused (bad input, disk, access), 1 a failed fetch,
130 cancelled.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from pathlib import Path

from protocol import DownloadEvent, PlannedFile

from ..errors import unusable_folder
from ..loaders.file_hashes import remember as remember_hash
from ..tools.doctor import GB
from .catalog import EXTRAS, PLANS, REPOSITORY_EXTRAS
from .fetch import (GIT_SHA1, SHA256, Cancelled, DownloadError, Rate, fetch, file_hash, part_bytes, remote_info,
                    repository_files)
from .plan import find_present, free_bytes, is_verified, make_plan, record_verified

EXIT_REFUSED = 2
EXIT_FAILED = 1
EXIT_CANCELLED = 130
PROGRESS_EVERY_S = 0.5
DISK_MARGIN_BYTES = 256 << 20  # room for the verified record and the file system's own


def add_download_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--plan", choices=PLANS, default="auto",
                        help="auto: the best set for this GPU's memory; or fp16 (32.8 GB transformer), fp8 "
                             "(fp8_scaled, 17.7 GB) or gguf-q4 (Q4_K_M, about 10.9 GB)")
    parser.add_argument("--to", type=Path, required=True, help="weights folder (ComfyUI layout; created if needed)")
    parser.add_argument("--gpu-memory", type=float, help="plan for a GPU with this many GB instead of this one's")
    parser.add_argument("--with", dest="extras", action="append", choices=sorted({*EXTRAS, *REPOSITORY_EXTRAS}),
                        default=[], help="optional files as well: dpo, the release's DPO LoRA; sam3, facebook/sam3 "
                                         "for Auto Masks and Matte (gated: needs HF_TOKEN with access granted)")
    parser.add_argument("--dry-run", action="store_true", help="show the plan and sizes; fetch nothing")
    parser.add_argument("--json", action="store_true", help="one JSON object per line (protocol.DownloadEvent)")


class _Output:
    def __init__(self, as_json: bool):
        self.as_json = as_json

    def event(self, event: DownloadEvent, text: str = "") -> None:
        if self.as_json:
            print(json.dumps(event.to_dict()), flush=True)
        elif text:
            print(text, flush=True)


def gpu_memory(args: argparse.Namespace) -> float | None:
    if args.gpu_memory is not None:
        return args.gpu_memory * GB
    from ..tools.doctor import cuda_info

    total = cuda_info().get("total_bytes")
    return float(total) if total else None


def _gb(value: float) -> str:
    return f"{value / GB:.1f} GB" if value >= 0.1 * GB else f"{value / 1e6:.1f} MB"


def run_download(args: argparse.Namespace) -> int:
    out = _Output(args.json)
    folder = args.to.expanduser().resolve()
    problem = unusable_folder(folder)
    if problem:
        return _refuse(out, f"the weights folder {folder} {problem}; choose another folder (nothing was fetched)")
    from ..tools.doctor import transformer_params

    try:
        plan = make_plan(args.plan, gpu_memory(args), transformer_params(), tuple(e for e in args.extras if e in EXTRAS))
    except ValueError as exc:
        return _refuse(out, str(exc))
    find_present(folder, plan, link_cache=not args.dry_run)
    missing = plan.missing()
    planned = [PlannedFile(path=f.path, repo=f.repo, filename=f.filename, size_bytes=f.size_bytes, part=f.part,
                           present=f.key in plan.present, where=plan.present.get(f.key, "")) for f in plan.files]
    repositories = [REPOSITORY_EXTRAS[e] for e in dict.fromkeys(args.extras) if e in REPOSITORY_EXTRAS]
    planned += [PlannedFile(path=f"{where}/", repo=repo, filename="(the whole repository; its size is asked from "
                            "the hub when the download starts)", size_bytes=0, part=where) for repo, where in repositories]
    total = sum(f.size_bytes for f in missing)
    free = free_bytes(folder)
    lines = [f"plan {plan.variant.name}: {plan.reason}"]
    sizes = {f.path: ("" if f.exact_size else "~") + _gb(f.size_bytes) for f in plan.files}
    lines += [f"  {'present ' if p.present else 'fetch   '} {p.path:<75} {sizes.get(p.path, '?'):>10}"
              + (f"  ({p.where})" if p.present else f"  from {p.repo}") for p in planned]
    lines.append(f"to fetch: {_gb(total)} in {len(missing)} files; free in {folder}: {_gb(free)}")
    out.event(DownloadEvent(event="plan", message=plan.reason, plan=plan.variant.name, folder=str(folder),
                            total_bytes=total, free_bytes=free, memory_mode=plan.memory_mode, files=planned),
              "\n".join(lines))
    if args.dry_run:
        return 0
    token = os.environ.get("HF_TOKEN") or None
    try:
        missing += [f for repo, where in repositories for f in repository_files(repo, where, token)
                    if not is_verified(folder, f)]
        remotes = [remote_info(f, token) for f in missing]
    except DownloadError as exc:
        return _refuse(out, str(exc))
    remotes, refusal = _keep_files_in_place(folder, remotes)
    if refusal:
        return _refuse(out, refusal)
    needed = sum(r.size - min(part_bytes(folder, r), r.size) for r in remotes)
    if needed + DISK_MARGIN_BYTES > free:
        return _refuse(out, f"not enough disk space in {folder}: {_gb(needed)} still to fetch, {_gb(free)} free; "
                            "free some space or choose another folder (nothing was fetched)")
    return _fetch_all(out, folder, remotes, token)


def _keep_files_in_place(folder: Path, remotes) -> tuple[list, str | None]:
    """The remotes still to fetch, and why the download is refused (None: it is not). A file already where a
    remote goes (the plan's checks did not take it: not a file the loaders use, not one fetched here before)
    is the hub's file when its hash is the hub's: it is kept and counted as fetched. Any other is someone
    else's, which a download never writes over: the download is refused before a byte is fetched."""
    left = []
    for remote in remotes:
        target = folder / remote.file.path
        if not target.exists() and not target.is_symlink():
            left.append(remote)
        elif target.is_file() and (SHA256.match(remote.etag) or GIT_SHA1.match(remote.etag)) and \
                file_hash(target, remote.etag) == remote.etag:
            record_verified(folder, remote.file, remote.etag, remote.size)
        else:
            return left, (f"{target} is there and is not the file the plan fetches (not the hub's hash); move it "
                          "away, then run the download again: nothing was fetched")
    return left, None


def _fetch_all(out: _Output, folder: Path, remotes, token) -> int:
    total = sum(r.size for r in remotes)
    done = sum(min(part_bytes(folder, r), r.size) for r in remotes)  # resumed parts count as done
    rate, state = Rate(), {"done": done, "shown": 0.0, "file": ""}
    rate.add(done)

    def on_bytes(count: int) -> None:
        state["done"] += count
        now = time.monotonic()
        rate.add(state["done"], now)
        if now - state["shown"] >= PROGRESS_EVERY_S:
            state["shown"] = now
            _progress(out, state, total, rate)

    from ..stop_signals import StopSignals  # the same stop rule as generate: between chunks here, a second signal at once

    with StopSignals() as stop:
        for remote in remotes:
            state["file"] = remote.file.path
            try:
                digest = fetch(folder, remote, token, on_bytes, cancelled=stop.requested)
            except Cancelled:
                out.event(DownloadEvent(event="cancelled", file=remote.file.path, done_bytes=state["done"],
                                        total_bytes=total, message="stopped; the partial file is kept and "
                                        "Get Weights (or the same command) resumes it"),
                          f"stopped during {remote.file.path}; run the same command again to resume")
                return EXIT_CANCELLED
            except DownloadError as exc:
                return _refuse(out, str(exc), EXIT_FAILED)
            except Exception as exc:  # the connection failed for good (httpx), or the disk (OSError): the part is kept
                return _refuse(out, f"{remote.file.path}: {str(exc).splitlines()[0]}; the partial file is kept: "
                                    "press Get Weights again to resume", EXIT_FAILED)
            record_verified(folder, remote.file, digest, remote.size)
            remember_hash(folder / remote.file.path, digest)  # the Hub's hash: recipes name the file by it
            out.event(DownloadEvent(event="verified", file=remote.file.path, message=digest),
                      f"verified {remote.file.path} (sha {digest[:12]}...)")
    _progress(out, state, total, rate)
    out.event(DownloadEvent(event="done", folder=str(folder), done_bytes=state["done"], total_bytes=total,
                            message=f"the weights are in {folder}"),
              f"done: use --weights {folder}")
    return 0


def _progress(out: _Output, state: dict, total: int, rate: Rate) -> None:
    speed = rate.speed()
    eta = rate.eta(total - state["done"])
    out.event(DownloadEvent(event="progress", file=state["file"], done_bytes=state["done"], total_bytes=total,
                            speed_bps=speed, eta_s=eta),
              f"{state['done'] / 1e6:.0f} of {total / 1e6:.0f} MB, {speed / 1e6:.1f} MB/s"
              + (f", {eta:.0f} s left" if eta is not None else ""))


def _refuse(out: _Output, message: str, status: int = EXIT_REFUSED) -> int:
    if out.as_json:
        out.event(DownloadEvent(event="error", message=message))
    else:
        print(f"error: {message}", file=sys.stderr, flush=True)
    return status
