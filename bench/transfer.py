"""Files over the connection to a remote worker: throughput and a job's transfer overhead, on loopback with TLS.

Starts a real worker (`python -m backend serve --tls`, tiny profile) on 127.0.0.1 and drives it with
the add-on's own client (`core.worker_client`, `core.transfer`), as Blender would:

1. upload and download throughput of a 64 MiB file of random bytes, and the CPU an upload costs the worker
   and the add-on (Linux's per-thread counters): on loopback both ends share the machine's cores, so that
   work divided by the cores is the least time any upload doing it can take here;
2. a 65-frame 2048x1080 driving clip (the fixture clip scaled up, encoded as mp4) uploaded, then
   uploaded again (the worker has it: only hashed);
3. an 81-frame 512p result (PNG frames of the fixture clip at 896x512, as a job folder of the worker)
   fetched into a local folder, then fetched again (nothing changed); the CPU a fetch costs both ends, and
   the limit's below (both its ends are threads of the bench), as for the upload;
4. in the same run, the limit: a plain Python `ssl` socket pair on loopback (the worker's own
   certificate, 1 MiB sends, large receives) moving the same 64 MiB each way and the same result
   file set; each step's ratio to it is printed (upload and download: MiB/s over the limit's;
   the result fetch: its time over the file set's time at the limit). Steps 1 and 3 and their
   limits run `--repeat` times, in turn, and their medians are compared. Beside the upload's limit,
   the same socket pair with the receiver hashing what arrives (SHA-256, on a thread of its own), as an
   upload the worker names by its hash must. On the 2-core test VM that reached only 0.58-0.68 of the
   limit in 2026's first sessions (the hash's CPU shares the two cores with both ends' TLS); it is no
   floor, though: its three threads share one interpreter, and later the upload itself beat it. And the
   hash alone, no transfer: on a machine whose TLS outruns its SHA-256 (the test VM in December 2026:
   64 MiB in 39-49 ms over TLS, 42-54 ms through SHA-256) that alone takes more than the limit's time;
5. what the bench folder's file system itself costs: creating the result's 83 files there (empty),
   no transfer at all, just before the fetches and after them. A fetch cannot be faster than that.
   On this project's test VM (ext4 without a journal, which does not reuse an inode freed in the last
   minutes and passes over each such one) creating a file costs 15-25 us, or up to 0.9 ms for minutes
   after many files were deleted near that folder: 20000 deleted beside it, 15 us a file before and
   0.9 ms 30 s after (a test run's or an earlier bench's clean-up is enough). So the folder is an
   option (`--folder`, default the system's temporary folder) and is printed with the results.

What the bench writes itself (its inputs, and the earlier steps' hundreds of MB) is flushed to disk
(`os.sync`) before a step is timed: left dirty, its writeback landed in a later step (three runs each
way, alternated: the result's fetch 3.5, 2.8, 3.7x its limit without, 2.8, 2.4, 1.9x with).

    .venvs/backend/bin/python bench/transfer.py [--mib 64] [--repeat 5] [--folder DIR]
"""

from __future__ import annotations

import argparse
import hashlib
import os
import queue
import re
import socket
import statistics
import ssl
import subprocess
import sys
import tempfile
import threading
import time
import types
from pathlib import Path

import cv2
import numpy as np

REPO = Path(__file__).resolve().parents[1]
FOOTAGE = REPO / "tests" / "fixtures" / "footage"
DRIVING = FOOTAGE / "scail_001_driving.mp4"
HASHED_PIECE_BYTES = 4 << 20  # what the hashed limit hands its hashing thread at a time (the worker's chunk)


def addon_modules():
    """The add-on's client modules, imported as part of a package (as Blender imports them)."""
    package = types.ModuleType("scail2")
    package.__path__ = [str(REPO)]
    sys.modules["scail2"] = package
    from scail2.core import transfer, worker_client

    return worker_client, transfer


def start_worker(folder: Path) -> tuple[subprocess.Popen, dict]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu", "--jobs-root",
         str(folder / "jobs"), "--listen", "127.0.0.1:0", "--tls"],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
        env={**os.environ, "XDG_CONFIG_HOME": str(folder / "config")},
    )
    found = {}
    for raw in proc.stderr:
        line = raw.decode()
        for key, pattern in (("fingerprint", r"fingerprint: ([0-9A-F:]{95})"), ("token", r"add-on\): (\S+)"),
                             ("port", r"listening on 127\.0\.0\.1:(\d+) with TLS")):
            if match := re.search(pattern, line):
                found[key] = match.group(1)
        if "port" in found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()
            return proc, found
    raise SystemExit(f"the worker did not start (status {proc.wait()})")


def footage_frames(count: int, size: tuple[int, int]) -> list[np.ndarray]:
    capture = cv2.VideoCapture(str(DRIVING))
    frames = []
    while len(frames) < count:
        ok, frame = capture.read()
        if not ok:
            capture.set(cv2.CAP_PROP_POS_FRAMES, 0)
            continue
        frames.append(cv2.resize(frame, size, interpolation=cv2.INTER_CUBIC))
    return frames


def write_clip(path: Path, frames: list[np.ndarray]) -> None:
    height, width = frames[0].shape[:2]
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"mp4v"), 16.0, (width, height))
    for frame in frames:
        writer.write(frame)
    writer.release()


def raw_tls_seconds(cert_dir: Path, payloads: list[bytes], upload: bool, hash_received: bool = False) -> float:
    """Seconds a plain TLS socket pair on loopback takes to move `payloads` (client -> server when
    `upload`), each with an 8-byte length in front, until the receiver has all of them (and says so).
    `hash_received`: the receiver also hands every 4 MiB it receives to a thread that hashes it (SHA-256),
    and says so only once that is done, as a worker must before it names an upload by its hash."""
    server_context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    server_context.load_cert_chain(cert_dir / "worker-cert.pem", cert_dir / "worker-key.pem")
    client_context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    client_context.check_hostname, client_context.verify_mode = False, ssl.CERT_NONE
    listener = socket.create_server(("127.0.0.1", 0))
    accepted: list[ssl.SSLSocket] = []
    acceptor = threading.Thread(target=lambda: accepted.append(
        server_context.wrap_socket(listener.accept()[0], server_side=True)))
    acceptor.start()
    client = client_context.wrap_socket(socket.create_connection(listener.getsockname()))
    acceptor.join()
    server = accepted[0]
    for sock in (client, server):
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sender, receiver = (client, server) if upload else (server, client)

    def receive_all() -> None:
        buffer = bytearray(1 << 20)
        for payload in payloads:
            left = len(payload) + 8
            while left:
                left -= receiver.recv_into(buffer, min(left, len(buffer)))
        receiver.sendall(b"k")

    def receive_and_hash_all() -> None:
        received: queue.Queue = queue.Queue(maxsize=3)
        free = [bytearray(HASHED_PIECE_BYTES) for _ in range(5)]  # never refilled while queued or hashed
        def hash_all() -> None:
            digest = hashlib.sha256()
            for piece in iter(received.get, None):
                digest.update(piece)

        hasher = threading.Thread(target=hash_all)
        hasher.start()
        pieces = 0
        for payload in payloads:
            left = len(payload) + 8
            while left:
                view = memoryview(free[pieces % len(free)])[: min(left, HASHED_PIECE_BYTES)]
                filled = 0
                while filled < len(view):
                    filled += receiver.recv_into(view[filled:])
                received.put(view)
                left, pieces = left - filled, pieces + 1
        received.put(None)
        hasher.join()
        receiver.sendall(b"k")

    start = time.perf_counter()
    thread = threading.Thread(target=receive_and_hash_all if hash_received else receive_all)
    thread.start()
    for payload in payloads:
        sender.sendall(len(payload).to_bytes(8, "big"))
        view = memoryview(payload)
        for offset in range(0, len(view), 1 << 20):
            sender.sendall(view[offset : offset + (1 << 20)])
    sender.recv(1)
    seconds = time.perf_counter() - start
    thread.join()
    for sock in (client, server, listener):
        sock.close()
    return seconds


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def cpu_seconds(pid: int) -> float:
    """CPU time so far of the threads of process `pid` now alive (Linux's per-thread schedstat, in ns)."""
    total = 0
    for task in Path(f"/proc/{pid}/task").iterdir():
        try:
            total += int((task / "schedstat").read_text().split()[0])
        except (OSError, ValueError, IndexError):  # a thread that ended meanwhile
            pass
    return total / 1e9


def timed_with_cpu(fn, worker_pid: int, cpu: list[tuple[float, float]]) -> float:
    """`timed(fn)`, and the CPU it cost the worker and this process (the add-on's client) appended to `cpu`."""
    worker, client = cpu_seconds(worker_pid), time.process_time()
    seconds = timed(fn)
    cpu.append((cpu_seconds(worker_pid) - worker, time.process_time() - client))
    return seconds


def least_seconds(cpu: list[tuple[float, float]]) -> tuple[float, str]:
    """The least time the work measured in `cpu` ((worker, add-on) CPU seconds a run) allows where both ends
    share this machine's cores (the medians' sum over the cores), and those medians in words."""
    worker = statistics.median(w for w, _c in cpu)
    client = statistics.median(c for _w, c in cpu)
    cores = len(os.sched_getaffinity(0))
    return (worker + client) / cores, (f"the worker {worker * 1e3:.0f} ms, the add-on {client * 1e3:.0f} ms; here, "
                                       f"where both ends share {cores} cores")


def folder_bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def created_seconds(folder: Path, count: int) -> float:
    """Seconds it takes to create `count` empty files in a new folder (the file system's own part of a fetch)."""
    folder.mkdir()
    start = time.perf_counter()
    for k in range(count):
        os.close(os.open(folder / f"file_{k:06d}", os.O_WRONLY | os.O_CREAT, 0o666))
    return time.perf_counter() - start


def medians_in_turn(repeat: int, *steps) -> tuple[float, ...]:
    """Median seconds of each `step(k)` over `repeat` rounds, the steps taken in turn in every round, so
    that a limit and what it limits see the same moments of a shared machine (single runs here vary by
    +-40 %)."""
    times: list[list[float]] = [[] for _ in steps]
    for k in range(repeat):
        for step, found in zip(steps, times):
            found.append(step(k))
    return tuple(statistics.median(found) for found in times)


def add_folder_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--folder", default=None, help="where the bench's files go (default: the system's "
                        "temporary folder)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--mib", type=int, default=64, help="size of the throughput file (default 64)")
    parser.add_argument("--repeat", type=int, default=5, help="runs of each step and its limit (default 5)")
    add_folder_argument(parser)
    args = parser.parse_args()
    worker_client, transfer = addon_modules()
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        tmp = Path(tmp)
        proc, found = start_worker(tmp)
        try:
            client = worker_client.WorkerClient.connect("127.0.0.1", int(found["port"]), token=found["token"],
                                                        fingerprint=found["fingerprint"], timeout=120)
            transfers = client.transfers
            rows = []
            cert_dir = tmp / "config" / "scail2" / "worker-tls"
            framing = "binary frames" if transfers.binary else "base64 lines"
            framing += ", unnamed uploads" if transfers.unnamed_uploads else ""

            bigs = [tmp / f"random_{k}.bin" for k in range(args.repeat)]  # a new file each time: none is known
            for big in bigs:
                big.write_bytes(os.urandom(args.mib << 20))
            os.sync()  # the bench's own inputs on disk before a step is timed (their writeback is not ours)
            payload = [bigs[0].read_bytes()]
            upload_cpu: list[tuple[float, float]] = []
            limit_s, hashed_s, seconds = medians_in_turn(
                args.repeat, lambda _k: raw_tls_seconds(cert_dir, payload, upload=True),
                lambda _k: raw_tls_seconds(cert_dir, payload, upload=True, hash_received=True),
                lambda k: timed_with_cpu(lambda: transfers.upload_file(str(bigs[k])), proc.pid, upload_cpu))
            rows.append((f"limit: raw TLS socket, {args.mib} MiB one way", limit_s, args.mib / limit_s, None))
            rows.append(("the same, the receiver hashing what arrives on a thread of its own (as an upload named "
                         f"by its hash must; {limit_s / hashed_s:.2f} of the limit)", hashed_s,
                         args.mib / hashed_s, None))
            rows.append((f"upload {args.mib} MiB random ({framing})", seconds, args.mib / seconds, limit_s / seconds))
            floor_s, cpu_text = least_seconds(upload_cpu)
            rows.append((f"CPU of one upload (medians): {cpu_text}, no upload doing that work can take less than "
                         f"this ({limit_s / floor_s:.2f} of the limit at best)", floor_s, None, None))
            hash_s = statistics.median(timed(lambda: hashlib.sha256(payload[0]).digest()) for _ in range(args.repeat))
            rows.append((f"SHA-256 of the {args.mib} MiB alone, one thread, no transfer (the worker's share of an "
                         f"upload; the limit's time is {limit_s / hash_s:.2f} of it)", hash_s, args.mib / hash_s, None))
            served = tmp / "jobs" / "bench_download"
            served.mkdir(parents=True)
            os.link(bigs[0], served / "random.bin")
            limit_s, seconds = medians_in_turn(
                args.repeat, lambda _k: raw_tls_seconds(cert_dir, payload, upload=False),
                lambda k: timed(lambda: transfers.fetch_folder(str(served), str(tmp / f"local_download_{k}"))))
            rows.append((f"limit: raw TLS socket, {args.mib} MiB the other way", limit_s, args.mib / limit_s, None))
            rows.append((f"download {args.mib} MiB random ({framing})", seconds, args.mib / seconds,
                         limit_s / seconds))

            clip = tmp / "clip_2048x1080.mp4"
            write_clip(clip, footage_frames(65, (2048, 1080)))
            clip_mib = clip.stat().st_size / (1 << 20)
            seconds = timed(lambda: transfers.upload_file(str(clip)))
            rows.append((f"upload 65-frame 2048x1080 clip ({clip_mib:.1f} MiB)", seconds, clip_mib / seconds, None))
            seconds = timed(lambda: transfers.upload_file(str(clip)))
            rows.append(("same clip again (worker has it: hash only)", seconds, None, None))

            result = tmp / "jobs" / "bench_result"
            (result / "frames").mkdir(parents=True)
            for k, frame in enumerate(footage_frames(81, (896, 512))):
                cv2.imwrite(str(result / "frames" / f"frame_{k:06d}.png"), frame)
            write_clip(result / "preview.mp4", footage_frames(81, (896, 512)))
            (result / "manifest.json").write_text("{}")
            os.sync()  # as above; and the 64 MiB steps' files (hundreds of MB) written back before this one
            result_mib = folder_bytes(result) / (1 << 20)
            file_set = [p.read_bytes() for p in sorted(result.rglob("*")) if p.is_file()]
            creating_before = statistics.median(created_seconds(tmp / f"created_before_{k}", len(file_set))
                                                for k in range(3))
            limit_cpu: list[tuple[float, float]] = []
            fetch_cpu: list[tuple[float, float]] = []
            at_limit, seconds = medians_in_turn(
                args.repeat, lambda _k: timed_with_cpu(lambda: raw_tls_seconds(cert_dir, file_set, upload=False),
                                                       proc.pid, limit_cpu),
                lambda k: timed_with_cpu(lambda: transfers.fetch_folder(str(result), str(tmp / f"local_result_{k}")),
                                         proc.pid, fetch_cpu))
            limit_cpu_s = statistics.median(client for _worker, client in limit_cpu)  # both its ends are in here
            rows.append((f"limit: raw TLS socket, the result's {len(file_set)} files ({limit_cpu_s * 1e3:.0f} ms of "
                         "CPU, both ends)", at_limit, result_mib / at_limit, None))
            rows.append((f"fetch 81-frame 512p result ({result_mib:.1f} MiB; {seconds / at_limit:.1f}x the "
                         "limit's time)", seconds, result_mib / seconds, at_limit / seconds))
            floor_s, cpu_text = least_seconds(fetch_cpu)
            rows.append((f"CPU of one fetch (medians): {cpu_text}, no fetch doing that work can take less than this "
                         f"({floor_s / at_limit:.1f}x the limit's time at best)", floor_s, None, None))
            creating = statistics.median(created_seconds(tmp / f"created_{k}", len(file_set)) for k in range(args.repeat))
            rows.append((f"creating {len(file_set)} empty files in the bench folder, before and after the fetches "
                         f"(no transfer; {creating_before * 1e3:.1f} ms before)", creating, None, None))
            local = tmp / "local_result_0"
            assert folder_bytes(local) == folder_bytes(result)
            seconds = timed(lambda: transfers.fetch_folder(str(result), str(local)))
            rows.append(("same result again (nothing changed)", seconds, None, None))
            client.close()
        finally:
            proc.terminate()
            proc.wait(30)
    print(f"medians of {args.repeat} runs, each taken in turn with its limit; load average "
          f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} CPUs; bench folder in {args.folder or tempfile.gettempdir()}")
    print("| step | seconds | MiB/s | of the limit |\n|---|---|---|---|")
    for name, seconds, rate, ratio in rows:
        print(f"| {name} | {seconds:.3f} | {'' if rate is None else f'{rate:.1f}'} | "
              f"{'' if ratio is None else f'{ratio:.2f}'} |")


if __name__ == "__main__":
    main()
