"""`python -m backend jobs`: a running worker's queue from a terminal, for whoever looks after the GPU machine.

    SCAIL2_TOKEN=... python -m backend jobs --worker 127.0.0.1:7860 list
    SCAIL2_TOKEN=... python -m backend jobs --worker gpu01:7860 --fingerprint AB:CD:... cancel 1a2b3c4d5e6f

With an admin's token (`tokens add NAME --admin`) it lists and cancels every artist's jobs; with an artist's,
that artist's own (the worker decides, as for the add-on). The token comes from $SCAIL2_TOKEN or a file
(`--token-file`), never from the command line, which every user of the machine sees in the process list.
On the worker's own machine the certificate `serve --tls` made is pinned from the folder it keeps it in;
from anywhere else, `--fingerprint` (the one the worker printed) or `--certificate FILE`. A worker without
TLS is reached on loopback only, as the add-on reaches it.

Hand-written over the standard library: the add-on's client is Blender's side of the protocol and the
backend never imports it; these few requests need one blocking connection, not its threads and queue.
"""

from __future__ import annotations

import argparse
import json
import os
import socket
import ssl
import sys
import time
from pathlib import Path

import protocol
from protocol.progress_text import progress_fields_text

from .serve import is_loopback, parse_listen
from .tls import CERT_NAME, TLSError, certificate_fingerprint, default_tls_dir, fingerprint

TOKEN_VARIABLE = "SCAIL2_TOKEN"
CONNECT_TIMEOUT_S = 15.0
ANSWER_TIMEOUT_S = 60.0  # a worker's first hello on a busy machine takes seconds
LINE_LIMIT = 16 << 20  # a list of a large studio's jobs is far below this
EXIT_FAILED = 1  # a job that could not be cancelled
EXIT_BAD_INPUT = 2  # no token, no worker, a refused token or certificate


class JobsCommandError(RuntimeError):
    """Why the command cannot go on, as one line."""


def add_jobs_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--worker", required=True, metavar="HOST:PORT", help="the worker's address, as given to "
                        "serve --listen (from its own machine: 127.0.0.1:PORT)")
    parser.add_argument("--token-file", type=Path, default=None, help=f"a file whose first line is the token "
                        f"(default: the {TOKEN_VARIABLE} environment variable)")
    parser.add_argument("--fingerprint", default="", help="the SHA-256 fingerprint the worker printed (TLS); on its "
                        "own machine the certificate it made is found without it")
    parser.add_argument("--certificate", type=Path, default=None, help="the worker's certificate file (serve "
                        "--tls-cert), to pin instead of a fingerprint")
    actions = parser.add_subparsers(dest="action", required=True)
    listing = actions.add_parser("list", help="the queued and running jobs (an admin: every artist's), in the order "
                                 "they start")
    listing.add_argument("--json", action="store_true", help="one JSON object for scripts and monitoring: the "
                         "worker's identity and model, and the jobs as the worker lists them")
    cancel = actions.add_parser("cancel", help="cancel queued or running jobs by their ids (a running one stops at "
                                "its next step)")
    cancel.add_argument("jobs", nargs="+", metavar="JOB")
    cancel.add_argument("--wait", type=float, default=120.0, help="seconds to wait for a running job to stop "
                        "(default 120)")


def run_jobs(args: argparse.Namespace) -> int:
    try:
        with WorkerConnection.open(args) as worker:
            if args.action == "list":
                jobs = worker.request("list_jobs")["jobs"]
                if args.json:
                    print(json.dumps(listing_record(worker.capabilities, args.worker, jobs), indent=1))
                else:
                    print(describe(worker.capabilities, args.worker))
                    print(jobs_table(jobs))
                return 0
            return cancel_jobs(worker, args.jobs, args.wait)
    except JobsCommandError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT


class WorkerConnection:
    """One blocking connection to a worker: requests answered by their request id, events kept in order."""

    def __init__(self, sock: socket.socket, token: str, where: str):
        self.sock, self.token, self.where = sock, token, where
        self.reader = sock.makefile("rb")
        self.events: list[dict] = []
        self.sent = 0
        self.capabilities = self.request("hello")

    @classmethod
    def open(cls, args: argparse.Namespace) -> WorkerConnection:
        try:
            host, port = parse_listen(args.worker)
        except ValueError as exc:
            raise JobsCommandError(str(exc).replace("--listen", "--worker")) from None
        token = read_token(args.token_file)
        pinned, found_here = pinned_fingerprint(args, host)
        where = protocol.wire.address_text(host, port)
        if not pinned and not is_loopback(host):
            raise JobsCommandError(f"the worker at {where} is reached with TLS only: give --fingerprint (the one it "
                                   "printed) or --certificate")
        try:
            sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)
        except OSError as exc:
            raise JobsCommandError(f"cannot reach the worker at {where}: {exc.strerror or exc}") from None
        if pinned:
            try:
                sock = _tls(sock, pinned, where)
            except _PlainWorker:
                if not found_here:
                    raise JobsCommandError(f"the worker at {where} answers without TLS: leave out --fingerprint and "
                                           "--certificate (it is reached on loopback only)") from None
                sock = socket.create_connection((host, port), timeout=CONNECT_TIMEOUT_S)  # its TLS is off now
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return cls(sock, token, where)

    def __enter__(self) -> WorkerConnection:
        return self

    def __exit__(self, *exc) -> None:
        self.reader.close()
        self.sock.close()

    def send(self, kind: str, **fields) -> str:
        self.sent += 1
        request_id = f"jobs-command-{self.sent}"
        line = protocol.encode_message(kind, request_id=request_id, token=self.token, **fields)
        try:
            self.sock.sendall(line.encode("utf-8"))
        except OSError as exc:
            raise JobsCommandError(f"the worker at {self.where} closed the connection: {exc}") from None
        return request_id

    def request(self, kind: str, **fields) -> dict:
        """The worker's answer to one request; its error as JobsCommandError."""
        request_id = self.send(kind, **fields)
        while True:
            try:
                message = self.next_message(ANSWER_TIMEOUT_S)
            except TimeoutError:
                raise JobsCommandError(f"the worker at {self.where} did not answer {kind} within "
                                       f"{ANSWER_TIMEOUT_S:g} s") from None
            if message.get("request_id") == request_id:
                if message.get("type") == "error":
                    raise JobsCommandError(answer_text(message))
                return message
            if message.get("type") == "error" and not message.get("job"):  # said to the connection: refused
                raise JobsCommandError(answer_text(message))
            self.events.append(message)

    def next_message(self, timeout: float) -> dict:
        self.sock.settimeout(timeout)
        try:
            line = self.reader.readline(LINE_LIMIT)
        except (TimeoutError, socket.timeout):
            raise TimeoutError from None
        except OSError as exc:
            raise JobsCommandError(f"the worker at {self.where} closed the connection: {exc}") from None
        if not line:
            raise JobsCommandError(f"the worker at {self.where} closed the connection")
        try:
            return protocol.decode_message(line)
        except protocol.ProtocolError as exc:
            raise JobsCommandError(f"the worker at {self.where} said something else than the protocol: {exc}") from None


class _PlainWorker(Exception):
    """The TLS handshake met plain TCP."""


def _tls(sock: socket.socket, pinned: str, where: str) -> ssl.SSLSocket:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname, context.verify_mode = False, ssl.CERT_NONE  # pinned below, by fingerprint
    try:
        wrapped = context.wrap_socket(sock)
    except ssl.SSLError as exc:
        sock.close()
        if exc.reason in protocol.wire.PLAIN_PEER_REASONS:
            raise _PlainWorker() from None
        raise JobsCommandError(f"no TLS with the worker at {where}: {exc.reason or exc}") from None
    except OSError as exc:
        sock.close()
        raise JobsCommandError(f"no TLS with the worker at {where}: {exc.strerror or exc}") from None
    seen = fingerprint(wrapped.getpeercert(binary_form=True) or b"")
    if seen != pinned:
        wrapped.close()
        raise JobsCommandError(f"refused: the worker at {where} shows certificate {seen}, not {pinned}")
    return wrapped


def read_token(token_file: Path | None) -> str:
    if token_file is not None:
        try:
            token = token_file.read_text(encoding="utf-8-sig").strip().splitlines()[:1]
        except OSError as exc:
            raise JobsCommandError(f"cannot read the token file {token_file}: {exc.strerror or exc}") from None
        if not token or not token[0].strip():
            raise JobsCommandError(f"the token file {token_file} is empty")
        return token[0].strip()
    token = os.environ.get(TOKEN_VARIABLE, "").strip()
    if not token:
        raise JobsCommandError(f"no token: set {TOKEN_VARIABLE} or give --token-file (an admin's token lists every "
                               "artist's jobs)")
    return token


def pinned_fingerprint(args: argparse.Namespace, host: str) -> tuple[str, bool]:
    """(The fingerprint to pin, "" for none; whether it was found on this machine rather than given)."""
    if args.fingerprint:
        pinned = protocol.wire.normalize_fingerprint(args.fingerprint)
        if not pinned:
            raise JobsCommandError("--fingerprint takes the 64 hexadecimal digits the worker printed (AB:CD:...)")
        return pinned, False
    try:
        if args.certificate is not None:
            return certificate_fingerprint(args.certificate), False
        own = default_tls_dir() / CERT_NAME
        if is_loopback(host) and own.is_file():
            return certificate_fingerprint(own), True
    except TLSError as exc:
        raise JobsCommandError(str(exc)) from None
    return "", False


def answer_text(message: dict) -> str:
    text = str(message.get("message") or message.get("code") or "the worker refused")
    return f"{text} ({message['hint']})" if message.get("hint") else text


def describe(capabilities: dict, where: str) -> str:
    """One line on the worker: where, which model on which device, and whom the token signs in as."""
    model = capabilities.get("model") or {}
    who = capabilities.get("identity") or ""
    role = " (admin: every artist's jobs)" if capabilities.get("admin") else ""
    signed = f"; signed in as {who}{role}" if who else ""
    return f"worker at {where}: {model.get('label') or model.get('name') or 'no model'} on " \
           f"{capabilities.get('device') or 'an unknown device'}{signed}"


def listing_record(capabilities: dict, where: str, jobs: list[dict]) -> dict:
    """`jobs list --json`: the worker (address, whom the token signs in as, model, device) and its jobs as it
    listed them (`protocol.events.Jobs`), each running one's `state` in words as the table says it."""
    model = capabilities.get("model") or {}
    return {"worker": {"address": where, "identity": capabilities.get("identity") or None,
                       "admin": bool(capabilities.get("admin")), "model": model.get("label") or model.get("name"),
                       "device": capabilities.get("device"), "backend": capabilities.get("backend")},
            "jobs": [dict(entry, state=state_text(entry)) for entry in jobs]}


def jobs_table(jobs: list[dict]) -> str:
    """The jobs as aligned columns: id, artist, state (with progress or place), job folder."""
    if not jobs:
        return "no job queued or running"
    rows = [("JOB", "ARTIST", "STATE", "FOLDER")]
    for entry in jobs:
        rows.append((entry.get("job") or "-", entry.get("owner") or "-", state_text(entry),
                     os.path.basename(str(entry.get("job_dir", "")).rstrip("/\\"))))
    widths = [max(len(row[k]) for row in rows) for k in range(3)]
    return "\n".join("  ".join([*(cell.ljust(width) for cell, width in zip(row, widths)), row[3]]).rstrip()
                     for row in rows)


def state_text(entry: dict) -> str:
    """"queued, 2 ahead"; "Generating: segment 1/2, step 14/40 (running 12 min)"; "stopped part way ..."."""
    status = entry.get("status", "")
    if status == "queued":
        ahead = entry.get("position") or 0
        return f"queued, {ahead} ahead" if ahead else "queued, next"
    if status == "running" and entry.get("started_at") is not None:
        since = duration_text(time.time() - entry["started_at"])
        return f"{progress_fields_text(entry.get('progress') or {})} (running {since})"
    if status == "unfinished":
        return "stopped part way (resume it from Blender)"
    return status


def duration_text(seconds: float) -> str:
    """'45 s', '12 min', '2 h 05 min'."""
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


def cancel_jobs(worker: WorkerConnection, job_ids: list[str], wait_s: float) -> int:
    """Cancel each job; a line for each: cancelled (it was queued or running), or why not."""
    asked = {worker.send("cancel", job=job_id): job_id for job_id in dict.fromkeys(job_ids)}
    pending, failed = set(asked.values()), 0
    deadline = time.monotonic() + wait_s
    messages = list(worker.events)  # said before the cancels were answered (a job that ended meanwhile)
    while pending:
        if not messages:
            left = deadline - time.monotonic()
            if left <= 0:
                for job_id in sorted(pending):
                    print(f"{job_id}: asked to stop; it stops at its next step (not confirmed within {wait_s:g} s)")
                break
            try:
                messages.append(worker.next_message(left))
            except TimeoutError:
                continue
        job_id, line, cancelled = _settled(messages.pop(0), asked, pending)
        if job_id is not None:
            print(f"{job_id}: {line}")
            pending.discard(job_id)
            failed += not cancelled
    return EXIT_FAILED if failed else 0


def _settled(message: dict, asked: dict[str, str], pending: set[str]) -> tuple[str | None, str, bool]:
    """(The pending job `message` settles or None, what to say of it, whether it was cancelled): a refusal of a
    cancel request, the job's `cancelled` event, or its end before it could be cancelled."""
    if message.get("request_id") in asked and message.get("type") == "error":
        return asked[message["request_id"]], answer_text(message), False
    job_id = message.get("job")
    if job_id not in pending:
        return None, "", False
    if message.get("type") == "cancelled":
        return job_id, f"cancelled (it was {message.get('was') or 'queued'})", True
    if message.get("type") in ("done", "error"):
        return job_id, f"it ended ({message['type']}) before it could be cancelled", False
    return None, "", False
