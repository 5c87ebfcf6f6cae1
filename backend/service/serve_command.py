"""`python -m backend serve`: the worker's start, each refusal one line before anything is shown or loaded.

The order matters to whoever runs it: the numeric limits are checked, the port is bound (a port already
taken is said at once), the TLS certificate and the token are made and shown, torch is imported and the
memory settings checked, the worker is made (its tokens file and jobs root), and only then are jobs served
on stdin/stdout or on the bound port until a stop.
"""

from __future__ import annotations

import argparse
import signal
import sys

from ..errors import UserError
from ..options import memory_settings, model_name

EXIT_BAD_INPUT = 2


def _serve_limits_problem(args: argparse.Namespace) -> str | None:
    """The first of serve's numeric limits no worker could keep, as one line (None: all can be kept).
    Timeouts may be `inf` (never); a store cap must be a finite size (`inf` stopped the start in a traceback)."""
    if args.max_connections < 1:
        return f"--max-connections must be at least 1, not {args.max_connections}"
    if args.max_queued_per_artist < 0:
        return f"--max-queued-per-artist must be 0 (no limit) or more, not {args.max_queued_per_artist}"
    for option, seconds in (("--auth-timeout", args.auth_timeout), ("--idle-timeout", args.idle_timeout)):
        if not seconds > 0:
            return f"{option} must be a number of seconds above 0, not {seconds:g}"
    if not 0 < args.blob_cap_gb < float("inf"):
        return f"--blob-cap-gb must be a number of GB above 0, not {args.blob_cap_gb:g}"
    return None


def run_serve(args: argparse.Namespace) -> int:
    """The worker: the settings checked and the port bound (each refusal one line, before a token is shown
    or torch imported), then `_serve`."""
    from .serve import bind_failure, bind_tcp, parse_listen

    token = args.token or None
    listen = security = server = None
    problem = _serve_limits_problem(args)
    if problem:
        print(f"error: {problem}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if args.listen:
        from .listen import tcp_security

        try:
            listen = parse_listen(args.listen)
        except ValueError as exc:
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            server = bind_tcp(*listen)
        except OSError as exc:
            print(f"error: {bind_failure(*listen, exc)}", file=sys.stderr)
            return EXIT_BAD_INPUT
        try:
            security = tcp_security(listen[0], token, args.tls, args.tls_cert, args.tls_key,
                                    named_tokens=args.tokens is not None)
        except ValueError as exc:
            server.close()
            print(f"error: {exc}", file=sys.stderr)
            return EXIT_BAD_INPUT
        token = security.token
    try:
        return _serve(args, token, listen, security, server)
    finally:
        if server is not None:
            server.close()  # a start refused after the bind; serving closes it itself


def _serve(args: argparse.Namespace, token, listen, security, server) -> int:
    """Serve jobs on stdin/stdout (`listen` None) or on the bound `server` until stopped."""
    from .jobs import default_jobs_root, log
    from .serve import serve_stdio, serve_tcp
    from .worker import Worker

    jobs_root = args.jobs_root or default_jobs_root()
    memory_args = memory_settings(args)
    model = model_name(args)
    import torch  # noqa: F401  (imported up front so the first request is answered quickly)

    from ..loaders.devices import check_memory_settings, resolve_device

    try:
        check_memory_settings(memory_args, resolve_device(args.device))  # at start, not at the first job's load
    except ValueError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT

    _interrupt_on_termination()
    from .identities import TokensFileError
    from .kept_queue import JobsRootBusy

    try:
        worker = Worker(model, args.device, memory_args, jobs_root, token=token,
                        segmentation_weights=(args.sam3_weights, args.sam2_weights),
                        blob_cap=max(0, int(args.blob_cap_gb * (1 << 30))), tokens_file=args.tokens,
                        max_queued_per_artist=args.max_queued_per_artist,
                        keep_queue=listen is not None)  # a served worker's queue outlives a restart
    except (TokensFileError, JobsRootBusy, UserError) as exc:  # UserError: a jobs root that cannot be made
        print(f"error: {exc}", file=sys.stderr)
        return EXIT_BAD_INPUT
    if listen is None:
        serve_stdio(worker)
    else:
        serve_tcp(worker, server, max_connections=args.max_connections, auth_timeout=args.auth_timeout,
                  tls=security.tls, idle_timeout=args.idle_timeout)
    log("stopped")
    return 0


def _interrupt_on_termination() -> None:
    """SIGTERM and SIGHUP (a service manager, a closed terminal) stop the worker as Ctrl-C does: the
    running job is cancelled first, so its state.json says "cancelled" and it resumes later."""
    def interrupt(_signum, _frame):
        raise KeyboardInterrupt

    for name in ("SIGTERM", "SIGHUP"):
        if hasattr(signal, name):
            signal.signal(getattr(signal, name), interrupt)
