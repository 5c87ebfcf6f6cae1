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
* fetch_files {job_dir, files: [{name, offset}]} -> one file_data after the other (the request's id
  on each), every file from its offset to its end in the order asked, then ok {request: "fetch_files"}.
  A file shorter than its offset is sent whole (its first file_data says offset 0); the first file
  that cannot be sent ends the reply with an error naming it. A job's result (81 frames) is then one
  request, not 81 round trips each answered on its own: the frames are read as the socket takes them
  (`connection.QueuedOutput.send_stream`), never the whole folder at once.
* fetch_changed {job_dir, have: [{name, size}], parts: [{name, offset}]} -> files {job_dir, files} (as
  list_files), then as fetch_files every listed file but those `have` names at their listed size, each
  from its `parts` offset, then ok {request: "fetch_changed"}. A mirror's sync is then one round trip,
  not two (list, then ask): the listing's wait was 1.4 ms of a 512p result's 50 ms fetch on loopback, and
  is a whole round trip on a remote link.

Only transfer-mode connections may fetch, and only from folders under the jobs root.
"""

from __future__ import annotations

import itertools
import os
from pathlib import Path
from stat import S_ISLNK
from typing import TYPE_CHECKING

import protocol

from .blobs import BlobError, check_sha
from .framing import chunk_bytes, encode_file_data, encode_reply, payload_of
from .job_files import NOT_IN_FOLDER, FolderFiles, listed_files, relative_parts
from .jobs import BAD_REQUEST, UNAUTHORIZED, ProtocolFailure, error_line, log
from .remote import remote_job_folder
from .sharing import identity_of

if TYPE_CHECKING:
    from .blobs import BlobStore
    from .ports import EventOutput as Output

MAX_LISTED_FILES = 100_000
MAX_FETCHED_FILES = 10_000  # files one fetch_files asks for at most (the add-on asks for 4096)
REMEMBERED_FOLDERS = 256  # job folders whose resolved path a fetch reuses


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
        return "files", {"job_dir": message.get("job_dir"), "files": self._listing(folder, output)}

    def _listing(self, folder: Path, output: Output) -> list[dict]:
        """The files of a job folder the connection's identity sees: [{name, size, version}]."""
        files = []
        if folder.is_dir() and self._sees_folder(folder, output):
            for name, stat in listed_files(str(folder)):
                files.append({"name": name, "size": stat.st_size, "version": _version(stat)})
                if len(files) >= MAX_LISTED_FILES:
                    break
        return files

    def _on_fetch_changed(self, message: dict, output: Output) -> None:
        folder = self._fetch_folder(message, output)
        held = _named_counts(message, "have", "size")
        parts = _named_counts(message, "parts", "offset")
        if not hasattr(output, "send_stream"):
            raise ProtocolFailure(BAD_REQUEST, "fetch_changed needs a TCP connection: list the files and fetch them")
        listing = self._listing(folder, output)
        asked = [{"name": entry["name"], "offset": parts.get(entry["name"], 0)}
                 for entry in listing if held.get(entry["name"]) != entry["size"]]
        listed = encode_reply(output, "files", {"job_dir": message.get("job_dir"), "files": listing,
                                                "request_id": message.get("request_id")})
        output.send_stream(itertools.chain((listed,), self._file_frames(message, folder, asked, output,
                                                                        "fetch_changed")))

    def _on_fetch(self, message: dict, output: Output) -> tuple[str, dict]:
        folder = self._fetch_folder(message, output)
        name, offset = message.get("name"), message.get("offset", 0)
        if not _is_offset(offset):
            raise ProtocolFailure(BAD_REQUEST, "fetch 'offset' must be a byte offset")
        relative_parts(name)  # a bad name is refused as such
        if not self._sees_folder(folder, output):  # another artist's: as a file that is not there
            raise ProtocolFailure(BAD_REQUEST, f"{NOT_IN_FOLDER}: {name}")
        try:
            with FolderFiles(folder) as files, files.open(name) as fh:
                stat = os.fstat(fh.fileno())
                fh.seek(offset)
                # Exactly what is left (a frame is far smaller than a chunk): a read of a whole chunk's
                # size would allocate it, fresh pages and all, for every small file.
                data = fh.read(max(0, min(chunk_bytes(output), stat.st_size - offset)))
        except OSError:
            raise ProtocolFailure(BAD_REQUEST, f"{NOT_IN_FOLDER}: {name}") from None
        fields = _file_fields(message.get("job_dir"), name, offset, stat, data)
        return "file_data", fields | {protocol.PAYLOAD_FIELD: data}

    def _on_fetch_files(self, message: dict, output: Output) -> None:
        folder = self._fetch_folder(message, output)
        asked = message.get("files")
        if not isinstance(asked, list) or not 0 < len(asked) <= MAX_FETCHED_FILES or not all(
                isinstance(item, dict) and _is_offset(item.get("offset", 0)) for item in asked):
            raise ProtocolFailure(BAD_REQUEST, f"fetch_files needs 'files': 1 to {MAX_FETCHED_FILES} objects "
                                  "{name, offset}, each offset a byte offset")
        if not hasattr(output, "send_stream"):
            raise ProtocolFailure(BAD_REQUEST, "fetch_files needs a TCP connection: fetch the files one at a time")
        for item in asked:
            relative_parts(item.get("name"))  # a bad name is refused before anything is sent
        if not self._sees_folder(folder, output):
            raise ProtocolFailure(BAD_REQUEST, f"{NOT_IN_FOLDER}: {asked[0].get('name')}")
        output.send_stream(self._file_frames(message, folder, asked, output, "fetch_files"))

    def _file_frames(self, message: dict, folder: Path, asked: list[dict], output: Output, request: str):
        """The frames of a fetch_files (or fetch_changed) reply, made one at a time as the connection takes
        them, ending in ok {request}. The token is checked again before each file, so a token revoked
        meanwhile stops the reply at once."""
        request_id, job_dir, token = message.get("request_id"), message.get("job_dir"), message.get("token")
        step = chunk_bytes(output)
        with FolderFiles(folder) as files:
            for item in asked:
                name = item["name"]
                if self.book.identify(token) is None:
                    log(f"{getattr(output, 'name', 'a client')}: its token was revoked; its fetch_files stopped")
                    output.closing = True
                    yield _error_frame(UNAUTHORIZED, "unauthorized: wrong, revoked or missing token; connection "
                                       "closed", request_id)
                    return
                try:
                    with files.open(name) as fh:
                        stat = os.fstat(fh.fileno())
                        offset = item.get("offset", 0) if item.get("offset", 0) <= stat.st_size else 0
                        fh.seek(offset)
                        while True:
                            data = fh.read(min(step, stat.st_size - offset))
                            if not data and offset < stat.st_size:  # written over in place while it was sent
                                yield _error_frame(BAD_REQUEST, f"{name} changed while it was sent: fetch it again",
                                                   request_id)
                                return
                            yield encode_file_data(output, data, **_file_fields(job_dir, name, offset, stat, data),
                                                   request_id=request_id)
                            offset += len(data)
                            if offset >= stat.st_size:
                                break
                except (OSError, ProtocolFailure):
                    yield _error_frame(BAD_REQUEST, f"{NOT_IN_FOLDER}: {name}", request_id)
                    return
        yield protocol.encode_message("ok", request=request, request_id=request_id), b""

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


def _is_offset(value: object) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and value >= 0


def _named_counts(message: dict, field: str, count: str) -> dict[str, int]:
    """A request's list of {name, `count`} (absent: empty) as name -> count; bad_request when malformed."""
    items = message.get(field, [])
    if not isinstance(items, list) or len(items) > MAX_LISTED_FILES or not all(
            isinstance(item, dict) and isinstance(item.get("name"), str) and _is_offset(item.get(count))
            for item in items):
        raise ProtocolFailure(BAD_REQUEST, f"{message.get('type')} '{field}' must be a list of objects {{name, "
                              f"{count}}}, each {count} a byte count")
    return {item["name"]: item[count] for item in items}


def _file_fields(job_dir: object, name: str, offset: int, stat: os.stat_result, data: bytes) -> dict:
    """A file_data reply's fields but its bytes: `data` read at `offset` of the file `stat` describes."""
    return {"job_dir": job_dir, "name": name, "offset": offset, "size": stat.st_size, "version": _version(stat),
            "eof": offset + len(data) >= stat.st_size}


def _error_frame(code: str, message: str, request_id: object) -> tuple[str, bytes]:
    return error_line(code, message, request_id=request_id), b""


def _version(stat: os.stat_result) -> str:
    return f"{stat.st_size}-{stat.st_mtime_ns}"
