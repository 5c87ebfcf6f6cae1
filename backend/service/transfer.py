"""Files over the connection: the request handlers of uploads (blobs) and of fetching a job's results.

`Transfers` is a part of `worker.Worker` (a base class, like `requests.Requests`):

* blob_status {sha256} -> blob {sha256, have}: the bytes the worker holds from this artist (-1
  none; the blob's size once complete), so an upload cut anywhere goes on where it stopped and a
  blob the artist sent is never sent again (another artist's is not seen: `blobs`).
* blob_put {sha256, size, offset, data (base64, at most CHUNK_BYTES)} -> blob {sha256, have,
  complete}; a chunk at any other offset than `have` is refused with the offset to go on from.
* Both take `upload` (an id, `protocol.UPLOAD_ID`) in place of `sha256` (`capabilities.unnamed_uploads`):
  a file whose SHA-256 the client has not worked out is sent at once, and the worker names it by the
  hash of what arrived (the reply's `sha256` once `complete`). The client then spends no time hashing
  before the first byte goes, and the wire carries what it would have waited for.
  With binary framing (`framing`) the bytes are the request's frame, not base64 `data`, and a
  chunk may be larger (`capabilities.chunk_bytes`); `file_data` replies likewise.
* list_files {job_dir} -> files {job_dir, files: [{name, size, version}]}: the job folder's
  files (relative names; lock and temporary files left out).
* fetch {job_dir, name, offset} -> file_data {job_dir, name, offset, size, version, data
  (base64, at most CHUNK_BYTES), eof}; `version` changes when the file is replaced.

Only transfer-mode connections may fetch, and only from folders under the jobs root.
"""

from __future__ import annotations

import os
from pathlib import Path
from stat import S_ISLNK
from typing import TYPE_CHECKING

import protocol

from .blobs import BlobError, check_sha
from .framing import chunk_bytes, payload_of
from .jobs import BAD_REQUEST, ProtocolFailure
from .remote import remote_job_folder
from .sharing import identity_of

if TYPE_CHECKING:
    from .blobs import BlobStore
    from .ports import EventOutput as Output

MAX_LISTED_FILES = 100_000
REMEMBERED_FOLDERS = 256  # job folders whose resolved path a fetch reuses
NOT_IN_FOLDER = "no such file in the job folder"


class Transfers:
    """The upload and download handlers of `worker.Worker`."""

    blobs: BlobStore
    jobs_root: Path
    _fetch_folders: dict[str, tuple[Path, tuple[int, int]]]  # job_dir -> (its folder, (device, inode))

    def _on_blob_status(self, message: dict, output: Output) -> tuple[str, dict]:
        who = identity_of(output)
        if "upload" in message:
            have, sha = self._unnamed(lambda upload: self.blobs.have_unnamed(upload, who), message)
            return "blob", {"upload": message["upload"], "sha256": sha or "", "have": have, "complete": sha is not None}
        sha = self._sha_of(message)
        return "blob", {"sha256": sha, "have": self.blobs.have(sha, who)}

    def _on_blob_put(self, message: dict, output: Output) -> tuple[str, dict]:
        offset, size = message.get("offset"), message.get("size")
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ProtocolFailure(BAD_REQUEST, "blob_put needs 'offset': where these bytes go")
        data, who = payload_of(message), identity_of(output)
        if len(data) > chunk_bytes(output):
            raise ProtocolFailure(BAD_REQUEST, f"a chunk is at most {chunk_bytes(output)} bytes")
        if "upload" in message:
            have, sha = self._unnamed(lambda upload: self.blobs.put_unnamed(upload, size, offset, data, who), message)
            return "blob", {"upload": message["upload"], "sha256": sha or "", "have": have, "complete": sha is not None}
        sha = self._sha_of(message)
        have = self._storing(lambda: self.blobs.put(sha, size, offset, data, who), lambda: self.blobs.have(sha, who))
        return "blob", {"sha256": sha, "have": have, "complete": have == size}

    def _unnamed(self, step, message: dict):
        """`step(upload id)` of an unnamed upload (`protocol.UPLOAD_ID`), its refusals as bad_request."""
        upload = message.get("upload")
        return self._storing(lambda: step(upload), lambda: -1)

    @staticmethod
    def _storing(step, have):
        """`step()`, a store's refusal as one bad_request line (with what the store holds, `have()`)."""
        try:
            return step()
        except BlobError as exc:
            raise ProtocolFailure(BAD_REQUEST, str(exc), hint=f"have {have()}") from None
        except OSError as exc:
            raise ProtocolFailure(BAD_REQUEST, f"the worker cannot store the upload: {exc.strerror or exc}") from None

    def _on_list_files(self, message: dict, output: Output) -> tuple[str, dict]:
        folder = self._fetch_folder(message, output)
        files = []
        for path in sorted(folder.rglob("*")) if folder.is_dir() and self._sees_folder(folder, output) else []:
            relative = path.relative_to(folder)
            if any(part.startswith(".") for part in relative.parts) or path.is_symlink() or not path.is_file():
                continue
            stat = path.stat()
            files.append({"name": relative.as_posix(), "size": stat.st_size, "version": _version(stat)})
            if len(files) >= MAX_LISTED_FILES:
                break
        return "files", {"job_dir": message.get("job_dir"), "files": files}

    def _on_fetch(self, message: dict, output: Output) -> tuple[str, dict]:
        folder = self._fetch_folder(message, output)
        name, offset = message.get("name"), message.get("offset", 0)
        if not isinstance(offset, int) or isinstance(offset, bool) or offset < 0:
            raise ProtocolFailure(BAD_REQUEST, "fetch 'offset' must be a byte offset")
        path = _file_in(folder, name)
        if not self._sees_folder(folder, output):  # another artist's: as a file that is not there
            raise ProtocolFailure(BAD_REQUEST, f"{NOT_IN_FOLDER}: {name}")
        try:
            with open(os.open(path, os.O_RDONLY | getattr(os, "O_NOFOLLOW", 0)), "rb") as fh:
                stat = os.fstat(fh.fileno())
                fh.seek(offset)
                # Exactly what is left (a frame is far smaller than a chunk): a read of a whole chunk's
                # size would allocate it, fresh pages and all, for every small file.
                data = fh.read(max(0, min(chunk_bytes(output), stat.st_size - offset)))
        except OSError:
            raise ProtocolFailure(BAD_REQUEST, f"{NOT_IN_FOLDER}: {name}") from None
        return "file_data", {"job_dir": message.get("job_dir"), "name": name, "offset": offset, "size": stat.st_size,
                             "version": _version(stat), protocol.PAYLOAD_FIELD: data,
                             "eof": offset + len(data) >= stat.st_size}

    # -- helpers ------------------------------------------------------------------------------
    @staticmethod
    def _sha_of(message: dict) -> str:
        try:
            return check_sha(message.get("sha256"))
        except BlobError as exc:
            raise ProtocolFailure(BAD_REQUEST, str(exc)) from None

    def _fetch_folder(self, message: dict, output: Output) -> Path:
        if getattr(output, "mode", "paths") != "transfer":
            raise ProtocolFailure(BAD_REQUEST, "fetching files needs a transfer-mode connection (hello mode)")
        if not isinstance(message.get("job_dir"), str):
            raise ProtocolFailure(BAD_REQUEST, "name the job folder ('job_dir') to fetch from")
        return self._resolved_folder(message["job_dir"])

    def _resolved_folder(self, job_dir: str) -> Path:
        """`remote_job_folder` of `job_dir`, remembered while the folder found is the same directory (one
        lstat a request instead of resolving every component of the path: a job's many small frames)."""
        known = self._fetch_folders.get(job_dir)
        if known is not None:
            folder, identity = known
            try:
                stat = folder.lstat()
                if (stat.st_dev, stat.st_ino) == identity and not S_ISLNK(stat.st_mode):
                    return folder
            except OSError:
                pass
        folder = remote_job_folder(self.jobs_root, job_dir, "")
        try:
            stat = folder.lstat()
        except OSError:
            return folder
        if len(self._fetch_folders) >= REMEMBERED_FOLDERS:
            self._fetch_folders.clear()  # (connection threads share it: no ordered eviction to race on)
        self._fetch_folders[job_dir] = (folder, (stat.st_dev, stat.st_ino))
        return folder


def _file_in(folder: Path, name: object) -> Path:
    """`name` (a relative name) inside `folder` (a resolved path): no parent steps, no hidden files, no
    linked folder on the way (checked one component at a time; the file itself is opened O_NOFOLLOW)."""
    if not isinstance(name, str) or not name or "\x00" in name or name.startswith("/") or "\\" in name:
        raise ProtocolFailure(BAD_REQUEST, "fetch needs 'name': a file of the job folder")
    parts = name.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise ProtocolFailure(BAD_REQUEST, f"{NOT_IN_FOLDER}: {name}")
    path = folder
    for part in parts:
        path = path / part
        try:
            if S_ISLNK(path.lstat().st_mode):
                raise ProtocolFailure(BAD_REQUEST, f"{NOT_IN_FOLDER}: {name}")
        except OSError:
            raise ProtocolFailure(BAD_REQUEST, f"{NOT_IN_FOLDER}: {name}") from None
    return path


def _version(stat: os.stat_result) -> str:
    return f"{stat.st_size}-{stat.st_mtime_ns}"
