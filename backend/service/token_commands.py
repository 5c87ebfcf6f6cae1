"""`python -m backend tokens`: the tokens file of a shared worker (`serve --tokens FILE`).

    python -m backend tokens add NAME [--admin]   # prints the new token once; only its hash is kept
    python -m backend tokens list                 # names and roles, never a token
    python -m backend tokens add NAME --replace   # a new token for NAME; the old one stops working
    python -m backend tokens revoke NAME          # refused at once, on open connections too; NAME's jobs stop

A running worker reads the file again when it changes, so none of these needs a restart. Each waits for a
file an editor is saving this moment (`read_when_saved`), and changes it under a lock.
"""

from __future__ import annotations

import argparse
import contextlib
import os
import secrets
import sys
import time
from pathlib import Path

try:
    import fcntl
except ImportError:  # Windows: no flock
    fcntl = None

import protocol

from .identities import (SETTLE_S, TOKEN_BYTES, Entry, TokensFileError, check_name, hash_token, read_as_saved,
                         read_entries, write_entries)
from .tls import default_tls_dir


def default_tokens_file() -> Path:
    """Beside the worker's certificate, in its configuration folder."""
    return default_tls_dir().parent / "worker-tokens"


def add_tokens_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--file", type=Path, default=None,
                        help=f"the tokens file (default: {default_tokens_file()}); give the same to serve --tokens")
    actions = parser.add_subparsers(dest="action", required=True)
    add = actions.add_parser("add", help="add an artist and print their new token (once)")
    add.add_argument("name", help="the artist's name (letters, digits, '.', '_', '-')")
    add.add_argument("--admin", action="store_true", help="may see and cancel every artist's jobs")
    add.add_argument("--replace", action="store_true", help="give an existing artist a new token (the old one "
                     "stops working)")
    actions.add_parser("list", help="the artists and their roles (tokens are never shown again)")
    revoke = actions.add_parser("revoke", help="remove an artist: their token is refused at once and their queued "
                                "and running jobs are cancelled")
    revoke.add_argument("name")


@contextlib.contextmanager
def _changing(path: Path):
    """Held while the file is read, changed and written: two `add`s at once (a script adding a team)
    would each write the file as it read it, and one artist's printed token would be in no file.
    The lock is the folder's own (flock), so no lock file is left behind; none where flock is missing."""
    if fcntl is None:
        yield
        return
    folder = Path(path).parent
    folder.mkdir(parents=True, exist_ok=True, mode=0o700)
    fd = os.open(folder, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX)
        yield
    finally:
        os.close(fd)  # lets the lock go


def run_tokens(args: argparse.Namespace) -> int:
    path = args.file or default_tokens_file()
    try:
        if args.action == "list":
            entries = read_when_saved(path)
            if not entries:
                print(f"no tokens in {path}")
            for entry in entries.values():
                print(f"{entry.name}\t{entry.role}")
            return 0
        check_name(args.name)  # before anything is made or locked
        with _changing(path):
            token = _change(path, args)
    except TokensFileError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except OSError as exc:
        print(f"error: cannot write {path}: {exc.strerror or exc}", file=sys.stderr)
        return 2
    if token is None:
        print(f"revoked {args.name}'s token ({path})")
        return 0
    print(f"{args.name}'s token (shown only this once; paste it into the add-on's preferences):", file=sys.stderr)
    print(token)
    return 0


def read_when_saved(path: Path) -> dict[str, Entry]:
    """`read_entries`, but not of a file an editor is saving this moment (emptied, or written half way, less
    than SETTLE_S ago): written back whole with one artist more, it would lose every artist the editor had not
    written yet. Such a file is read again until it ends whole or has stayed as it is for SETTLE_S."""
    deadline = time.monotonic() + 10 * SETTLE_S  # a modification time in the future (another clock) waits no longer
    while True:
        entries, unfinished = read_as_saved(path)
        try:
            changed = os.stat(path).st_mtime
        except FileNotFoundError:
            return {}  # no file (yet): the first artist
        if unfinished is None:
            return entries
        if time.time() - changed >= SETTLE_S or time.monotonic() > deadline:
            return read_entries(path)  # as it is: a damaged file is refused in one line, an empty one names nobody
        time.sleep(SETTLE_S / 10)


def _change(path: Path, args: argparse.Namespace) -> str | None:
    """Add (the new token) or revoke (None) `args.name` in the tokens file; TokensFileError when it cannot be."""
    entries, name = read_when_saved(path), args.name
    if args.action == "revoke":
        if name not in entries:
            raise TokensFileError(f"{name} has no token in {path}")
        del entries[name]
        write_entries(path, entries)
        return None
    if name in entries and not args.replace:
        raise TokensFileError(f"{name} has a token already: add --replace to give them a new one "
                              "(revoke would also cancel their jobs)")
    token = secrets.token_urlsafe(TOKEN_BYTES)
    entries[name] = Entry(name, protocol.ROLE_ADMIN if args.admin else protocol.ROLE_ARTIST, hash_token(token))
    write_entries(path, entries)
    return token
