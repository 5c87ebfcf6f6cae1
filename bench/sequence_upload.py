"""An image sequence sent to a remote worker, file by file: on loopback, and over a link with latency.

Starts a real worker (`python -m backend serve --tls`, tiny profile) on 127.0.0.1, as
`bench/transfer.py` does, and sends it image sequences (`frame_####.png`, files of random bytes) with
the add-on's own client, the way a submit in transfer mode sends a job's inputs:

1. `--sequences` sequences of `--files` files of `--kib` KiB each, one after the other on loopback
   (the milliseconds a file; the worker's store grows with each), then the same bytes as one file;
2. one more sequence through a proxy that holds every piece `--delay-ms` each way (a remote worker's
   round trip), then the same sequence again: the next take's submit, every file known by its hash.

A file is one request (or one question, when known) of a few hundred microseconds on loopback; over a
link each one it has to wait for costs a round trip, so the figure in step 2 says how many it waits for.

    .venvs/backend/bin/python bench/sequence_upload.py [--files 300] [--kib 50] [--sequences 3]
                                                       [--delay-ms 10] [--folder DIR]
"""

from __future__ import annotations

import argparse
import os
import queue
import socket
import socketserver
import sys
import tempfile
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from transfer import add_folder_argument, addon_modules, start_worker  # noqa: E402  (the transfer bench's)


class DelayingProxy(socketserver.ThreadingTCPServer):
    """127.0.0.1:port -> the worker, every piece held `delay` seconds in each direction (a link's latency)."""

    daemon_threads = True

    def __init__(self, target_port: int, delay: float):
        self.target, self.delay = target_port, delay
        super().__init__(("127.0.0.1", 0), _Relay)
        self.port = self.server_address[1]
        threading.Thread(target=self.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.shutdown()
        self.server_close()


class _Relay(socketserver.BaseRequestHandler):
    """One connection through the proxy: each direction read as it comes and sent `delay` later."""

    def handle(self) -> None:
        worker = socket.create_connection(("127.0.0.1", self.server.target))
        directions = []
        for source, sink in ((self.request, worker), (worker, self.request)):
            pieces: queue.Queue = queue.Queue()
            directions += [threading.Thread(target=self._read, args=(source, pieces)),
                           threading.Thread(target=self._send, args=(sink, pieces))]
        for thread in directions:
            thread.start()
        for thread in directions:
            thread.join()
        worker.close()

    def _read(self, source: socket.socket, pieces: queue.Queue) -> None:
        while True:
            try:
                data = source.recv(1 << 16)
            except OSError:
                data = b""
            pieces.put((time.monotonic() + self.server.delay, data))
            if not data:
                return

    @staticmethod
    def _send(sink: socket.socket, pieces: queue.Queue) -> None:
        while True:
            due, data = pieces.get()
            time.sleep(max(0.0, due - time.monotonic()))
            try:
                if not data:
                    sink.shutdown(socket.SHUT_WR)
                    return
                sink.sendall(data)
            except OSError:
                return


def make_sequence(folder: Path, files: int, kib: int) -> str:
    folder.mkdir(parents=True)
    for k in range(files):
        (folder / f"frame_{k:04d}.png").write_bytes(os.urandom(kib << 10))
    return str(folder / "frame_####.png")


def timed_inputs(transfers, pattern: str) -> float:
    """Seconds to send a job's input sequence (what a submit in transfer mode does before the job goes)."""
    start = time.perf_counter()
    transfers._upload_inputs("generate", {"driving": pattern}, None)
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--files", type=int, default=300, help="files a sequence (default 300)")
    parser.add_argument("--kib", type=int, default=50, help="KiB a file (default 50)")
    parser.add_argument("--sequences", type=int, default=3, help="sequences sent on loopback (default 3)")
    parser.add_argument("--delay-ms", type=float, default=10.0, help="the proxy's delay each way (default 10)")
    add_folder_argument(parser)
    args = parser.parse_args()
    worker_client, _transfer = addon_modules()
    rows = []
    with tempfile.TemporaryDirectory(dir=args.folder) as tmp:
        tmp = Path(tmp)
        proc, found = start_worker(tmp)
        proxy = DelayingProxy(int(found["port"]), args.delay_ms / 1000)
        try:
            client = worker_client.WorkerClient.connect("127.0.0.1", int(found["port"]), token=found["token"],
                                                        fingerprint=found["fingerprint"], timeout=120)
            patterns = [make_sequence(tmp / f"shot_{k}", args.files, args.kib) for k in range(args.sequences)]
            whole = tmp / "whole.bin"
            whole.write_bytes(os.urandom(args.files * args.kib << 10))
            os.sync()  # the bench's own inputs on disk before a step is timed
            for k, pattern in enumerate(patterns, 1):
                seconds = timed_inputs(client.transfers, pattern)
                rows.append((f"sequence {k} on loopback", seconds, seconds / args.files))
            start = time.perf_counter()
            client.transfers.upload_file(str(whole))
            rows.append(("the same bytes as one file, on loopback", time.perf_counter() - start, None))
            client.close()

            remote = worker_client.WorkerClient.connect("127.0.0.1", proxy.port, token=found["token"],
                                                        fingerprint=found["fingerprint"], timeout=120)
            pattern = make_sequence(tmp / "shot_remote", args.files, args.kib)
            os.sync()
            for name in ("a new sequence", "the same again (the next take: every file known)"):
                seconds = timed_inputs(remote.transfers, pattern)
                rows.append((f"{name}, {args.delay_ms:g} ms each way", seconds, seconds / args.files))
            remote.close()
        finally:
            proxy.close()
            proc.terminate()
            proc.wait(30)
    print(f"{args.files} files of {args.kib} KiB a sequence; load average {os.getloadavg()[0]:.2f}, "
          f"{os.cpu_count()} CPUs; bench folder in {args.folder or tempfile.gettempdir()}")
    print("| step | seconds | ms a file |\n|---|---|---|")
    for name, seconds, per_file in rows:
        print(f"| {name} | {seconds:.3f} | {'' if per_file is None else f'{per_file * 1e3:.2f}'} |")


if __name__ == "__main__":
    main()
