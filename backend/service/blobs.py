"""The worker's blob store: the files remote clients upload, named by their SHA-256.

A blob is written at increasing offsets into `<sha>.part` (so an upload cut anywhere resumes at
the size the part file has), checked against its hash once complete and renamed to `<sha>`. A
job uses a blob through a hard link (a copy where links are not possible) named like the
client's file, `links/<sha>/<name>`, so decoders see the file's extension. The store keeps at
most `cap` bytes: completing a blob evicts the least recently used ones (by modification time,
renewed on every use) that no queued or running job holds.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from pathlib import Path

import protocol

from ..errors import UserError

DEFAULT_CAP_BYTES = 20 << 30  # a few clips, reference stills and LoRAs
CHUNK_BYTES = 512 << 10  # the most one upload or download message carries (base64 keeps it under 1 MiB a line)
MAX_BLOB_BYTES = 64 << 30
MAX_LISTING_BYTES = 32 << 20  # a folder listing: ~100 bytes a file
_SHA = re.compile(r"[0-9a-f]{64}")
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._ -]{0,120}")


class BlobError(UserError):
    """An upload or a blob reference that cannot be taken; one line for the client."""


def check_sha(sha: object) -> str:
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise BlobError("a blob is named by its SHA-256: 64 lowercase hex digits")
    return sha


def check_name(name: object) -> str:
    """A file name (no folders) to give a blob's link: letters, digits, '.', '_', '-' and spaces."""
    if not isinstance(name, str) or not _NAME.fullmatch(name) or name in (".", ".."):
        raise BlobError(f"not a plain file name: {str(name)[:80]!r}")
    return name


class BlobStore:
    """Blobs under `root`, at most `cap` bytes of them."""

    def __init__(self, root: Path, cap: int = DEFAULT_CAP_BYTES):
        self.root, self.cap = Path(root), cap
        self._lock = threading.RLock()
        self._held: dict[str, int] = {}  # sha -> jobs holding it
        self._hashing: dict[str, tuple] = {}  # sha -> (hasher, bytes it has seen): hashed as it arrives

    def _path(self, sha: str) -> Path:
        return self.root / check_sha(sha)

    def have(self, sha: str) -> int:
        """How many bytes of `sha` the store has: its size when complete (-1 when it has none)."""
        path = self._path(sha)
        with self._lock:
            for candidate in (path, path.with_suffix(".part")):
                try:
                    return candidate.stat().st_size
                except OSError:
                    continue
        return -1

    def is_complete(self, sha: str) -> bool:
        return self._path(sha).is_file()

    def put(self, sha: str, size: int, offset: int, data: bytes) -> int:
        """Write `data` at `offset` of the upload of `sha` (`size` bytes in all); the bytes held after it.

        Only the next bytes are taken (offset == what the part file holds), so a resent chunk or
        a chunk from the future is refused and the client asks again where to go on.
        """
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= min(MAX_BLOB_BYTES, self.cap):
            raise BlobError(f"a blob is 0 to {min(MAX_BLOB_BYTES, self.cap)} bytes, got {size!r}")
        final = self._path(sha)
        part = final.with_suffix(".part")
        with self._lock:
            if final.is_file():
                return final.stat().st_size
            self.root.mkdir(parents=True, exist_ok=True, mode=0o700)
            held = part.stat().st_size if part.is_file() else 0
            if offset != held:
                raise BlobError(f"the worker holds {held} bytes of this blob, not {offset}: send from {held}")
            if held + len(data) > size:
                raise BlobError(f"the blob is {size} bytes; these would make it {held + len(data)}")
            hasher = self._hasher(sha, part, held)
            with open(part, "ab") as fh:
                fh.write(data)
            hasher.update(data)
            held += len(data)
            self._hashing[sha] = (hasher, held)
            if held < size:
                return held
            del self._hashing[sha]
            if hasher.hexdigest() != sha:
                part.unlink()
                raise BlobError("the uploaded bytes do not have the blob's SHA-256: send it again")
            os.replace(part, final)
            self._evict(keep=sha)
            return held

    def _hasher(self, sha: str, part: Path, held: int):
        """The running SHA-256 of the part file's `held` bytes (read again only after a restart)."""
        hasher, seen = self._hashing.get(sha, (None, -1))
        if seen == held:
            return hasher
        if not held:
            return hashlib.sha256()
        with open(part, "rb") as fh:
            return hashlib.file_digest(fh, "sha256")

    def link(self, sha: str, name: str) -> Path:
        """A path named `name` with the content of the complete blob `sha`, for a job to read."""
        check_name(name)
        source = self._path(sha)
        with self._lock:
            if not source.is_file():
                raise BlobError(f"blob {sha[:12]}... ({name}) is not uploaded")
            folder = self.root / "links" / sha
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / name
            if not target.is_file():
                _link_or_copy(source, target)
            os.utime(source)  # used now: the last to be evicted
            return target

    def link_tree(self, sha: str, name: str) -> tuple[Path, list[str]]:
        """A folder named `name` holding the files its listing blob `sha` names; (folder, blobs used)."""
        check_name(name)
        listing_path = self._path(sha)
        if not listing_path.is_file() or listing_path.stat().st_size > MAX_LISTING_BYTES:
            raise BlobError(f"folder listing {sha[:12]}... ({name}) is not uploaded")
        try:
            files = protocol.read_json_file(listing_path)["files"]
            entries = [(check_name(f["name"]), check_sha(f["sha256"])) for f in files]
        except (protocol.ProtocolError, ValueError, KeyError, TypeError) as exc:
            raise BlobError(f"folder listing {sha[:12]}... is not a listing of files: {exc}") from None
        if not entries or len({n for n, _ in entries}) != len(entries):
            raise BlobError(f"folder listing {sha[:12]}... names no files, or one twice")
        with self._lock:
            folder = self.root / "links" / sha / name
            folder.mkdir(parents=True, exist_ok=True)
            for file_name, file_sha in entries:
                target = folder / file_name
                if not target.is_file():
                    source = self._path(file_sha)
                    if not source.is_file():
                        raise BlobError(f"{file_name} of folder {name} is not uploaded")
                    os.utime(source)
                    _link_or_copy(source, target)
            os.utime(listing_path)
        return folder, [sha, *(file_sha for _, file_sha in entries)]

    def hold(self, shas) -> None:
        with self._lock:
            for sha in shas:
                self._held[sha] = self._held.get(sha, 0) + 1

    def release(self, shas) -> None:
        with self._lock:
            for sha in shas:
                count = self._held.get(sha, 0) - 1
                if count > 0:
                    self._held[sha] = count
                else:
                    self._held.pop(sha, None)

    def total(self) -> int:
        return sum(size for _sha, size, _used in self._blobs())

    def _blobs(self) -> list[tuple[str, int, float]]:
        """(sha, size, last used) of every complete blob, and of part files as their own entries."""
        found = []
        try:
            entries = list(os.scandir(self.root))
        except OSError:
            return []
        for entry in entries:
            stem = entry.name.removesuffix(".part")
            if _SHA.fullmatch(stem) and entry.is_file():
                stat = entry.stat()
                found.append((entry.name, stat.st_size, stat.st_mtime))
        return found

    def _evict(self, keep: str) -> None:
        """Remove least recently used blobs (and their links) until the store is within its cap."""
        blobs = sorted(self._blobs(), key=lambda item: item[2])
        total = sum(size for _name, size, _used in blobs)
        for name, size, _used in blobs:
            if total <= self.cap:
                return
            sha = name.removesuffix(".part")
            if sha == keep or sha in self._held:
                continue
            try:
                (self.root / name).unlink()
                shutil.rmtree(self.root / "links" / sha, ignore_errors=True)
            except OSError:
                continue
            total -= size


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to the blob ``source`` (a copy across file systems), put in place whole."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
