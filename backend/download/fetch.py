"""Fetch one file from the Hugging Face Hub into a part file that survives a cut, check it, move it in place.

The hub's own client does the HTTP: `get_hf_file_metadata` reads the file's size, commit and ETag
(for a file stored with LFS or Xet the ETag is its SHA-256, sent as ``X-Linked-Etag``) and
`http_get` streams it, resuming with a ``Range`` request after a dropped connection. Written here:
the part file. `hf_hub_download` keeps its partial download in a file unique to the process and
deletes it when the process stops (huggingface_hub 1.x and later), so a cancelled or killed
download would start over from byte 0; a 33 GB file on a home connection must not. The part file
lives in ``<weights>/.scail2-download/``, is named after the file and the hub's hash (a changed file
on the hub never resumes an old part), and is only appended to: whatever was written before a
kill is a valid prefix.

A finished file is hashed (SHA-256 for LFS files, git's blob hash for small ones) before it is moved
to its place, atomically; a mismatch deletes the part (it is this command's own) and says so.
"""

from __future__ import annotations

import hashlib
import os
import re
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

from .catalog import WeightsFile
from .plan import STATE_DIR

SHA256 = re.compile(r"^[0-9a-f]{64}$")
GIT_SHA1 = re.compile(r"^[0-9a-f]{40}$")
HASH_CHUNK = 8 << 20
# `http_get` writes (and, after a dropped connection, resumes) whole chunks of this size; the client's
# default, 10 MB, would lose up to 10 MB at each cut and report progress and honour Cancel as rarely.
CHUNK_BYTES = 1 << 20


class DownloadError(Exception):
    """A download that cannot go on, as one line for the artist."""


class Cancelled(Exception):
    """Stopped on request; the part file is kept."""


@dataclass(frozen=True)
class Remote:
    """What the hub says about one file before it is fetched."""

    file: WeightsFile
    url: str
    size: int
    etag: str
    commit: str


def hub_url(file: WeightsFile, revision: str = "main") -> str:
    from huggingface_hub import hf_hub_url

    return hf_hub_url(file.repo, file.filename, revision=revision)


def access_line(file: WeightsFile, status: int) -> str:
    """What to do when the hub refuses a file (401/403): usually a gated repository."""
    page = f"https://huggingface.co/{file.repo}"
    if status == 401:
        return (f"{file.repo} needs a Hugging Face token: create one at https://huggingface.co/settings/tokens, "
                f"request access on {page}, and enter the token in the add-on preferences (Hugging Face Token)")
    return (f"{file.repo}: access not granted yet for this token: request access on {page}, wait for the "
            "approval e-mail, then press Get Weights again")


def _hub_error(exc: Exception, file: WeightsFile) -> DownloadError:
    """One line for an error of the hub's client about `file` (or its repository)."""
    from huggingface_hub.errors import EntryNotFoundError, HfHubHTTPError, RepositoryNotFoundError

    status = getattr(getattr(exc, "response", None), "status_code", None)
    if status in (401, 403):
        return DownloadError(access_line(file, status))
    if isinstance(exc, (EntryNotFoundError, RepositoryNotFoundError)) or status == 404:
        return DownloadError(f"{file.repo}/{file.filename}: not on the hub (moved or renamed?); see docs/weights.md")
    if isinstance(exc, HfHubHTTPError):
        return DownloadError(f"{file.repo}/{file.filename}: the hub answered {status}: {str(exc).splitlines()[0]}")
    return DownloadError(f"cannot reach the Hugging Face Hub ({str(exc).splitlines()[0]}); check the connection "
                         "and press Get Weights again: finished files and parts are kept")


def repository_files(repo: str, folder: str, token: str | None) -> list[WeightsFile]:
    """Every file of `repo` (its listing from the hub), landing under `folder` with the repository's own paths."""
    from huggingface_hub import HfApi
    from huggingface_hub.hf_api import RepoFile

    try:
        entries = [e for e in HfApi().list_repo_tree(repo, recursive=True, token=token or False)
                   if isinstance(e, RepoFile)]
    except Exception as exc:  # the client's HTTP errors (OSErrors) and httpx's transport errors alike
        raise _hub_error(exc, WeightsFile(repo, repo, "", folder, "", 0)) from None
    files = []
    for entry in entries:
        if entry.path.rsplit("/", 1)[-1].startswith("."):
            continue  # .gitattributes and the like: the repository's, not the model's
        where = f"{folder}/{entry.path.rsplit('/', 1)[0]}" if "/" in entry.path else folder
        files.append(WeightsFile(f"{repo}:{entry.path}", repo, entry.path, where, folder, int(entry.size)))
    return files


def remote_info(file: WeightsFile, token: str | None) -> Remote:
    """Size, ETag and commit of `file` from a HEAD on its resolve URL; DownloadError in one line."""
    from huggingface_hub import get_hf_file_metadata

    url = hub_url(file)
    try:
        meta = get_hf_file_metadata(url, token=token or False, retry_on_errors=True)
    except Exception as exc:  # the client's HTTP errors (OSErrors) and httpx's transport errors alike
        raise _hub_error(exc, file) from None
    if meta.size is None or not meta.etag:
        raise DownloadError(f"{file.repo}/{file.filename}: the hub sent no size or hash for it")
    return Remote(file, meta.location, int(meta.size), meta.etag, meta.commit_hash or "")


def part_path(folder: Path, remote: Remote) -> Path:
    """The part file of `remote`: its name and the first 16 hex digits of the hub's hash."""
    return folder / STATE_DIR / remote.file.folder / f"{remote.file.name}.{remote.etag[:16]}.part"


def part_bytes(folder: Path, remote: Remote) -> int:
    path = part_path(folder, remote)
    return path.stat().st_size if path.is_file() else 0


class _CountingFile:
    """The part file as `http_get` writes it, counting bytes for the progress lines and checking for a
    cancel between chunks (a signal handler only sets a flag; the stop happens here, between writes)."""

    def __init__(self, raw, on_bytes: Callable[[int], None], cancelled: Callable[[], bool]):
        self._raw = raw
        self._on_bytes = on_bytes
        self._cancelled = cancelled

    def write(self, chunk: bytes) -> int:
        written = self._raw.write(chunk)
        self._on_bytes(len(chunk))
        if self._cancelled():
            self._raw.flush()
            raise Cancelled()
        return written

    def __getattr__(self, name):  # tell, seek, truncate, flush: the file's own
        return getattr(self._raw, name)


def file_hash(path: Path, etag: str) -> str:
    """The hash of `path` in the form of the hub's ETag: SHA-256, or git's blob SHA-1 for a small file."""
    if GIT_SHA1.match(etag):
        digest = hashlib.sha1(b"blob %d\0" % path.stat().st_size)
    else:
        digest = hashlib.sha256()
    with path.open("rb") as f:
        while chunk := f.read(HASH_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()


def fetch(folder: Path, remote: Remote, token: str | None, on_bytes: Callable[[int], None],
          cancelled: Callable[[], bool] = lambda: False) -> str:
    """Download `remote` into its part file (resuming it), check its hash, move it to its place; its hash."""
    from huggingface_hub import constants
    from huggingface_hub.file_download import http_get
    from huggingface_hub.utils import build_hf_headers

    constants.DOWNLOAD_CHUNK_SIZE = CHUNK_BYTES

    part = part_path(folder, remote)
    part.parent.mkdir(parents=True, exist_ok=True)
    done = part_bytes(folder, remote)
    if done > remote.size:  # longer than the file: not a prefix of it
        part.unlink()
        done = 0
    if done < remote.size:
        headers = build_hf_headers(token=token or False)
        headers["Accept-Encoding"] = "identity"  # byte ranges of the file itself, never of a compressed body
        with part.open("ab") as raw:
            http_get(remote.url, _CountingFile(raw, on_bytes, cancelled), resume_size=done, headers=headers,
                     expected_size=remote.size, displayed_filename=remote.file.name)
    if not (SHA256.match(remote.etag) or GIT_SHA1.match(remote.etag)):
        raise DownloadError(f"{remote.file.filename}: the hub's ETag {remote.etag!r} is not a hash; not used")
    actual = file_hash(part, remote.etag)
    if actual != remote.etag:
        part.unlink()
        raise DownloadError(f"{remote.file.path}: damaged in transit (hash {actual[:12]}... instead of the hub's "
                            f"{remote.etag[:12]}...); the part was deleted: press Get Weights again to fetch it anew")
    target = folder / remote.file.path
    target.parent.mkdir(parents=True, exist_ok=True)
    os.replace(part, target)
    return actual


class Rate:
    """Bytes per second over the last `window` seconds, and the time left for `remaining` bytes."""

    def __init__(self, window: float = 10.0):
        self.window = window
        self._samples: list[tuple[float, int]] = []

    def add(self, total: int, now: float | None = None) -> None:
        now = time.monotonic() if now is None else now
        self._samples.append((now, total))
        while len(self._samples) > 2 and now - self._samples[0][0] > self.window:
            self._samples.pop(0)

    def speed(self) -> float:
        if len(self._samples) < 2:
            return 0.0
        (t0, b0), (t1, b1) = self._samples[0], self._samples[-1]
        return (b1 - b0) / (t1 - t0) if t1 > t0 else 0.0

    def eta(self, remaining: int) -> float | None:
        speed = self.speed()
        return remaining / speed if speed > 0 else None
