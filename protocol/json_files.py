"""The one reader of the project's JSON files: any damage becomes one line, never a traceback.

Job state, manifests, reviews, job specs, `inputs.json`, recipes: every JSON file either side reads
goes through `read_json_file` (or `read_record`, which also validates it as a record). A file that
is missing, unreadable, not UTF-8, not JSON, nested past reason or of the wrong shape raises
`ProtocolError` with the file's name and what is wrong with it.
"""

from __future__ import annotations

import json
import os
from typing import Any, TypeVar

from .records import ProtocolError, Record

R = TypeVar("R", bound=Record)


def read_json_file(path: str | os.PathLike, what: str = "") -> Any:
    """The parsed contents of `path`, or ProtocolError("<what> <path>: <why>")."""
    label = f"{what} {os.fspath(path)}" if what else os.fspath(path)
    try:
        with open(path, "rb") as f:
            raw = f.read()
    except FileNotFoundError:
        raise ProtocolError(f"{label}: no such file") from None
    except OSError as exc:
        raise ProtocolError(f"{label}: cannot be read ({exc.strerror or exc})") from None
    return parse_json_bytes(raw, label)


def parse_json_bytes(raw: bytes, label: str) -> Any:
    """`raw` parsed as JSON, or ProtocolError("<label>: <why>")."""
    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        raise ProtocolError(f"{label}: not a JSON file (not UTF-8 text)") from None
    if not text.strip():
        raise ProtocolError(f"{label}: empty")
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise ProtocolError(f"{label}: damaged JSON ({exc.msg} at line {exc.lineno})") from None
    except RecursionError:
        raise ProtocolError(f"{label}: JSON nested too deeply") from None


def read_record(path: str | os.PathLike, record: type[R], what: str = "") -> R:
    """`path` read and validated as `record`, or ProtocolError with the file's name."""
    data = read_json_file(path, what or record.WHAT)
    try:
        return record.from_dict(data)
    except ProtocolError as exc:
        raise ProtocolError(f"{what or record.WHAT} {os.fspath(path)}: {exc}") from None
