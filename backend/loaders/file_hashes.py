"""SHA-256 of the model's weight files, worked out once per version of a file and kept on disk.

A take's recipe names the weights it was made with; their SHA-256 says *which* weights (a folder
refilled with another quantization keeps its file names). Hashing 30-60 GB after every take would
take minutes, so each file is hashed once per version (path, size, modification time, inode) and the
digest kept in `$XDG_CACHE_HOME/scail2/weight-hashes.json`. `backend download` records the Hub's own
SHA-256 of every file it verified, so downloaded weights are never hashed here; a worker hashes the
files of a model it loaded on a background thread (hashlib lets go of the GIL), and a recipe written
before that ends names those files without a hash.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import threading
from pathlib import Path

_lock = threading.Lock()


def cache_path() -> Path:
    root = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return root / "scail2" / "weight-hashes.json"


def _version(path: str | os.PathLike) -> tuple[str, dict] | None:
    try:
        stat = os.stat(path)
    except OSError:
        return None
    return os.path.realpath(path), {"size": stat.st_size, "mtime_ns": stat.st_mtime_ns, "inode": stat.st_ino}


def _read() -> dict:
    try:
        data = json.loads(cache_path().read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}
    return data if isinstance(data, dict) else {}


def known_sha256(path: str | os.PathLike) -> str | None:
    """The SHA-256 of this version of the file at `path`, when it was worked out or verified before."""
    version = _version(path)
    if version is None:
        return None
    entry = _read().get(version[0])
    if not isinstance(entry, dict) or {k: entry.get(k) for k in version[1]} != version[1]:
        return None
    sha = entry.get("sha256")
    return sha if isinstance(sha, str) and len(sha) == 64 else None


def remember(path: str | os.PathLike, sha256: str) -> None:
    """Keep `sha256` as the hash of the present version of `path` (the cache written whole, or not at all)."""
    version = _version(path)
    if version is None:
        return
    with _lock:
        entries = _read()
        entries[version[0]] = {**version[1], "sha256": sha256}
        target = cache_path()
        try:
            target.parent.mkdir(parents=True, exist_ok=True)
            fd, temporary = tempfile.mkstemp(prefix=".weight-hashes-", dir=target.parent)
            with os.fdopen(fd, "w", encoding="utf-8") as fh:
                json.dump(entries, fh, indent=1)
            os.replace(temporary, target)
        except OSError:
            pass  # a cache: without it the file is hashed again another time


def hash_file(path: str | os.PathLike) -> str | None:
    """The file's SHA-256 (from the cache, else worked out and kept); None when it cannot be read."""
    known = known_sha256(path)
    if known is not None:
        return known
    try:
        with open(path, "rb") as fh:
            sha = hashlib.file_digest(fh, "sha256").hexdigest()
    except OSError:
        return None
    remember(path, sha)
    return sha


def hash_in_background(paths) -> threading.Thread:
    """Hash the files not hashed yet, one after another, on a daemon thread (started); the thread."""
    unknown = [p for p in dict.fromkeys(str(p) for p in paths if p) if os.path.isfile(p) and known_sha256(p) is None]
    thread = threading.Thread(target=lambda: [hash_file(p) for p in unknown], name="scail2-weight-hashes",
                              daemon=True)
    thread.start()
    return thread
