"""The worker's blob store: the files remote clients upload, named by their SHA-256.

A blob is written at increasing offsets into a part file of its uploader's own
(`parts/<artist>/<sha>.part`, so an upload cut anywhere resumes at the size the part file has),
checked against its hash once complete and renamed to `<sha>`. A job uses a blob through a hard
link (a copy where links are not possible) named like the client's file, `links/<sha>/<name>`, so
decoders see the file's extension. The store keeps at most `cap` bytes: completing a blob evicts
the least recently used ones (by modification time, renewed on every use) that no queued or
running job holds, down to EVICT_TO of the cap. The store is listed for that only when the bytes taken
since it was last listed may have reached the cap.

On a shared worker a blob is each artist's own: `<sha>.owners` names who uploaded it, and to any
other artist it is as absent as a blob nobody sent (`have` says -1, a job naming it is refused), so
no artist learns which files another one works with by asking for their hashes. A second artist
uploads the same bytes again, which proves they hold them; the store keeps one copy and adds the
name. An admin, and the one user of a private worker, see every blob.

Chunks are hashed and written on a thread of their own, past the page cache
(`protocol.direct_io`): the model's weights stay cached.
"""

from __future__ import annotations

import hashlib
import os
import re
import shutil
import threading
from pathlib import Path

import protocol
from protocol.direct_io import BackgroundWriter

from ..errors import UserError
from ..pipeline.durable import write_json_atomic
from .identities import EVERYONE, Identity

DEFAULT_CAP_BYTES = 20 << 30  # a few clips, reference stills and LoRAs
EVICT_TO = 0.9  # a store over its cap is brought down to this much of it
CHUNK_BYTES = 512 << 10  # the most one upload or download message carries (base64 keeps it under 1 MiB a line)
MAX_BLOB_BYTES = 64 << 30
MAX_LISTING_BYTES = 32 << 20  # a folder listing: ~100 bytes a file
PARTS = "parts"
OWNERS_SUFFIX = ".owners"
UNNAMED_PARTS = "_"  # the unnamed `--token` identity's parts (an artist's name never starts with "_")
REMEMBERED_UPLOADS = 1024  # finished unnamed uploads whose blob a client may ask for again (a reply lost in a cut)
_SHA = re.compile(r"[0-9a-f]{64}")
_PART = re.compile(r"(?:[0-9a-f]{64}|upload-[A-Za-z0-9_-]{16,64})\.part")


class BlobError(UserError):
    """An upload or a blob reference that cannot be taken; one line for the client."""


def check_sha(sha: object) -> str:
    if not isinstance(sha, str) or not _SHA.fullmatch(sha):
        raise BlobError("a blob is named by its SHA-256: 64 lowercase hex digits")
    return sha


def check_name(name: object) -> str:
    """A file name (no folders) to give a blob's link (`protocol.is_link_name`: any script's letters and digits)."""
    if not protocol.is_link_name(name):
        raise BlobError(f"not a plain file name: {str(name)[:80]!r}")
    return name


class BlobStore:
    """Blobs under `root`, at most `cap` bytes of them. `who` is the asking identity (EVERYONE on a
    private worker): what it may see, and whose part file an upload goes to."""

    def __init__(self, root: Path, cap: int = DEFAULT_CAP_BYTES):
        self.root, self.cap = Path(root), cap
        self._lock = threading.RLock()
        self._held: dict[str, int] = {}  # sha -> jobs holding it
        self._hashing: dict[Path, tuple] = {}  # part file -> (hasher, bytes it has seen): hashed as it arrives
        self._parts = BackgroundWriter()  # chunks hashed and written while the next ones arrive
        self._finished: dict[tuple[str, str], tuple[str, int]] = {}  # (artist, upload id) -> (sha, size)
        # Bytes the store may still take before the cap can be reached, as of its last look at every blob
        # (None: not looked yet). Looking at every blob for each one completed made an image sequence's
        # upload slower file by file: 300 files of 50 KB took 7.6, 12.9, 18.4 ms a file in three sequences
        # in a row, half the connection thread's time spent listing the store (2.8-3.2 ms once it was not).
        self._room: int | None = None

    def _path(self, sha: str) -> Path:
        return self.root / check_sha(sha)

    def _part(self, sha: str, who: Identity) -> Path:
        return self.root / PARTS / (who.name or UNNAMED_PARTS) / f"{check_sha(sha)}.part"

    def owners(self, sha: str) -> list[str]:
        """Who uploaded the complete blob `sha` (empty for a blob of a store older than owners)."""
        try:
            names = protocol.read_json_file(self._path(sha).with_suffix(OWNERS_SUFFIX))
        except protocol.ProtocolError:
            return []
        return [n for n in names if isinstance(n, str)] if isinstance(names, list) else []

    def _visible(self, sha: str, who: Identity) -> bool:
        """Whether `who` may use the complete blob `sha` (call with the lock held)."""
        return self._path(sha).is_file() and (who.admin or who.name in self.owners(sha))

    def have(self, sha: str, who: Identity = EVERYONE) -> int:
        """How many bytes of `sha` `who` has given the store: its size when complete (-1 when none)."""
        with self._lock:
            if self._visible(sha, who):
                return self._path(sha).stat().st_size
            return self._held_of(self._part(sha, who))

    def is_complete(self, sha: str) -> bool:
        return self._path(sha).is_file()

    def put(self, sha: str, size: int, offset: int, data: bytes, who: Identity = EVERYONE) -> int:
        """Write `data` at `offset` of `who`'s upload of `sha` (`size` bytes in all); the bytes held after it.

        Only the next bytes are taken (offset == what the part file holds), so a resent chunk or
        a chunk from the future is refused and the client asks again where to go on.
        """
        part = self._part(sha, who)
        with self._lock:
            if self._visible(sha, who):
                return self._path(sha).stat().st_size
            held, digest = self._append(part, size, offset, data)
            if digest is not None:
                if digest != sha:
                    part.unlink()
                    raise BlobError("the uploaded bytes do not have the blob's SHA-256: send it again")
                self._store(part, sha, who)
            return held

    def put_unnamed(self, upload: str, size: int, offset: int, data: bytes,
                    who: Identity = EVERYONE) -> tuple[int, str | None]:
        """`put` for an upload whose SHA-256 the client does not know: (bytes held, the blob's SHA-256
        once complete, worked out from the bytes as they came)."""
        part = self._upload_part(upload, who)
        with self._lock:
            finished = self._finished.get((who.name, upload))
            if finished is not None:
                return finished[1], finished[0]
            held, digest = self._append(part, size, offset, data)
            if digest is not None:
                self._store(part, digest, who)
                self._finished[(who.name, upload)] = (digest, held)
                while len(self._finished) > REMEMBERED_UPLOADS:
                    self._finished.pop(next(iter(self._finished)))
            return held, digest

    def have_unnamed(self, upload: str, who: Identity = EVERYONE) -> tuple[int, str | None]:
        """(bytes of the unnamed upload the store holds, -1 when none; its SHA-256 once complete)."""
        with self._lock:
            finished = self._finished.get((who.name, upload))
            if finished is not None and self._visible(finished[0], who):
                return finished[1], finished[0]
            return self._held_of(self._upload_part(upload, who)), None

    def _upload_part(self, upload: str, who: Identity) -> Path:
        if not isinstance(upload, str) or not protocol.UPLOAD_ID.fullmatch(upload):
            raise BlobError("an upload is named by 16-64 letters, digits, '_' or '-'")
        return self.root / PARTS / (who.name or UNNAMED_PARTS) / f"upload-{upload}.part"

    def _append(self, part: Path, size: int, offset: int, data: bytes) -> tuple[int, str | None]:
        """Write the next bytes of the part file (hold the lock); (bytes held, hex SHA-256 once complete)."""
        if not isinstance(size, int) or isinstance(size, bool) or not 0 <= size <= min(MAX_BLOB_BYTES, self.cap):
            raise BlobError(f"a blob is 0 to {min(MAX_BLOB_BYTES, self.cap)} bytes, got {size!r}")
        part.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
        held = max(self._held_of(part), 0)
        if offset != held:
            raise BlobError(f"the worker holds {held} bytes of this blob, not {offset}: send from {held}")
        if held + len(data) > size:
            raise BlobError(f"the blob is {size} bytes; these would make it {held + len(data)}")
        hasher = self._hasher(part, held)
        try:
            self._parts.add(part, held, data, hasher)
            if self._room is not None:
                self._room -= len(data)
            held += len(data)
            self._hashing[part] = (hasher, held)
            if held < size:
                return held, None
            self._parts.wait(part)
        except OSError:
            self._hashing.pop(part, None)  # what the part file holds is what the client sends from
            raise
        del self._hashing[part]
        return held, hasher.hexdigest()

    def _store(self, part: Path, sha: str, who: Identity) -> None:
        """The complete, checked part file as blob `sha`, with `who` among its owners (hold the lock)."""
        final = self._path(sha)
        if final.is_file():  # the same bytes sent before (by another artist): one copy, one more owner
            size = part.stat().st_size
            part.unlink()
            if self._room is not None:
                self._room += size
        else:
            os.replace(part, final)
        # Not synced: lost in a crash, it only hides the blob from its uploader, who sends it again and is
        # named again. Two fsyncs a blob were a third of an image sequence's upload (300 files of 50 KB).
        write_json_atomic(final.with_suffix(OWNERS_SUFFIX), sorted({*self.owners(sha), who.name}), synced=False)
        if self._room is None or self._room < 0:
            self._evict(keep=sha)

    def _held_of(self, part: Path) -> int:
        """The bytes of a part file taken so far (some may still be on their way to the disk), -1 if none."""
        if part in self._hashing:
            return self._hashing[part][1]
        try:
            return part.stat().st_size
        except OSError:
            return -1

    def _hasher(self, part: Path, held: int):
        """The running SHA-256 of the part file's `held` bytes (read again only after a restart)."""
        hasher, seen = self._hashing.get(part, (None, -1))
        if seen == held:
            return hasher
        if not held:
            return hashlib.sha256()
        with open(part, "rb") as fh:
            return hashlib.file_digest(fh, "sha256")

    def _usable(self, sha: str, who: Identity, what: str) -> Path:
        """The complete blob `sha`, when `who` may use it; refused as not uploaded otherwise."""
        if not self._visible(sha, who):
            raise BlobError(f"{what} is not uploaded")
        return self._path(sha)

    def link(self, sha: str, name: str, who: Identity = EVERYONE) -> Path:
        """A path named `name` with the content of the complete blob `sha`, for a job to read."""
        check_name(name)
        with self._lock:
            source = self._usable(sha, who, f"blob {sha[:12]}... ({name})")
            folder = self.root / "links" / sha
            folder.mkdir(parents=True, exist_ok=True)
            target = folder / name
            if not target.is_file():
                _link_or_copy(source, target)
            os.utime(source)  # used now: the last to be evicted
            return target

    def link_tree(self, sha: str, name: str, who: Identity = EVERYONE) -> tuple[Path, list[str]]:
        """A folder named `name` holding the files its listing blob `sha` names; (folder, blobs used)."""
        check_name(name)
        with self._lock:
            listing_path = self._usable(sha, who, f"folder listing {sha[:12]}... ({name})")
        if listing_path.stat().st_size > MAX_LISTING_BYTES:
            raise BlobError(f"folder listing {sha[:12]}... ({name}) is not a listing of files: too large")
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
                source = self._usable(file_sha, who, f"{file_name} of folder {name}")
                os.utime(source)
                if not target.is_file():
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

    def _blobs(self) -> list[tuple[Path, int, float]]:
        """(path, size, last used) of every complete blob and every part file."""
        found = []
        folders = [self.root]
        try:
            folders += [Path(e.path) for e in os.scandir(self.root / PARTS) if e.is_dir()]
        except OSError:
            pass
        for folder in folders:
            try:
                entries = list(os.scandir(folder))
            except OSError:
                continue
            for entry in entries:
                if (_SHA.fullmatch(entry.name) or _PART.fullmatch(entry.name)) and entry.is_file():
                    stat = entry.stat()
                    found.append((Path(entry.path), stat.st_size, stat.st_mtime))
        return found

    def _evict(self, keep: str) -> None:
        """Remove least recently used blobs (and their links) once the store is over its cap, down to EVICT_TO of it
        (so that a full store is not listed again for every blob that completes); hold the lock."""
        blobs = sorted(self._blobs(), key=lambda item: item[2])
        total = sum(size for _path, size, _used in blobs)
        enough = self.cap if total <= self.cap else int(self.cap * EVICT_TO)
        for path, size, _used in blobs:
            if total <= enough:
                break
            sha = path.name.removesuffix(".part")
            if sha == keep or sha in self._held:
                continue
            try:
                path.unlink()
                if path.suffix != ".part":
                    path.with_suffix(OWNERS_SUFFIX).unlink(missing_ok=True)
                    shutil.rmtree(self.root / "links" / sha, ignore_errors=True)
            except OSError:
                continue
            total -= size
        self._room = self.cap - total  # below 0 while held blobs keep it over: looked at again next time


def _link_or_copy(source: Path, target: Path) -> None:
    """``target`` as a hard link to the blob ``source`` (a copy across file systems), put in place whole."""
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        os.link(source, tmp)
    except OSError:
        shutil.copyfile(source, tmp)
    os.replace(tmp, target)
