# SPDX-License-Identifier: GPL-3.0-or-later
"""Files over the connection to a remote worker (transfer mode), for `worker_client.WorkerClient`.

Standard library only and no ``bpy``. A remote worker reads none of Blender's paths and
Blender reads none of its: `Transfers` uploads a job's inputs as blobs before its ``submit``,
and mirrors the job's folder on the worker into the job folder Blender chose, so every event
the queue sees names local files, exactly as with a local worker:

* submit: each input file is hashed (SHA-256) and sent in chunks from where the worker stands
  (``blob_status``), so a cut costs at most the chunk in flight and a blob the worker has is
  never sent again; the job then names ``blob:<sha>/<name>``. Progress: local ``progress``
  events with phase ``upload`` (``bytes``, ``total``).
* ``frame_ready``: the frame is fetched first, then the event names the local copy.
* ``done``, ``cancelled``, ``error``: the whole folder is fetched (what changed), phase
  ``download``, then the event names the local folder and manifest.
* after a reconnection, every job still mirrored is fetched again before the worker's
  ``capabilities`` is passed on (the queue then asks which jobs ended meanwhile).

Downloads are written to ``.NAME.part`` beside the file and renamed when whole; a cut resumes
at the part file's size. One thread does all of it, in the order events arrived.
"""

import base64
import collections
import json
import os
import re
import secrets
import tempfile
import threading
import time

from .. import protocol
from ..protocol.direct_io import BackgroundWriter
from .downloads import IN_FLIGHT, Downloads, TransferError  # noqa: F401  (TransferError: this module's too)
from .file_digests import cached_sha256, file_identity, file_sha256
from .worker_tls import WorkerClientError

CHUNK_BYTES = 512 << 10  # a line-framing worker's (capabilities.chunk_bytes); base64 keeps a line under 1 MiB
REPLY_TIMEOUT_S = 60.0
RETRY_FOR_S = 600.0  # how long a transfer waits for the connection to come back
INPUT_FIELDS = ("driving", "reference", "driving_mask", "reference_mask")
LIST_FIELDS = ("extra_references", "extra_reference_masks")
END_EVENTS = ("done", "cancelled", "error")
REQUEST_PREFIX = "xfer-"
_SHA256 = re.compile(r"[0-9a-f]{64}")
WORKER_JOB_NOTE = ".scail2-worker-job.json"  # in a mirrored job folder: the worker's folder it mirrors (resume)


class _Cancelled(Exception):
    pass


def folder_files(folder):
    """The files of a folder a job reads (an image sequence), in name order; hidden ones left out."""
    names = sorted(n for n in os.listdir(folder) if not n.startswith(".")
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise TransferError("the folder {:s} holds no files".format(folder))
    return [os.path.join(folder, n) for n in names]


def sequence_files(pattern):
    """The files of an image sequence named like ``shot/frame_%04d.png`` or ``shot/frame_####.png``, in order."""
    folder, name = os.path.split(pattern)
    if not protocol.SEQUENCE_NAME.fullmatch(name):
        raise TransferError("a sequence sent to a remote worker is named with letters, digits, '.', '_', '-' "
                            "and one %d or #### counter: {:s}".format(name))
    expression = protocol.sequence_regex(name)
    files = [os.path.join(folder or ".", n) for n in sorted(os.listdir(folder or "."))
             if expression.fullmatch(n)]
    if not files:
        raise TransferError("no files of the sequence {:s}".format(pattern))
    return files


def safe_name(path):
    """The blob link name for a local file: its base name in the characters the worker takes."""
    name = "".join(ch if ch.isalnum() or ch in "._-" else "_" for ch in os.path.basename(path))
    return (name.lstrip("._-") or "input")[:120]


class Transfers(Downloads):
    """Uploads and mirrored job folders of one client. ``send(kind, **fields)`` sends a request;
    ``deliver(message)`` hands an event to the client's inbox; ``connected()`` says whether
    requests can go out now."""

    def __init__(self, send, deliver, connected, closing):
        self._send, self._deliver, self._connected, self._closing = send, deliver, connected, closing
        self._tasks = collections.deque()
        self._cond = threading.Condition()
        self._replies = {}
        self._unwanted = set()  # request ids whose replies are dropped on arrival
        self._streams = {}  # request id -> the downloads.FileStream its file_data replies go to (fetch_files)
        self._count = 0
        self.submits = {}  # request_id -> local job folder, until queued
        self.jobs = {}  # worker job id -> (worker job folder, local job folder)
        self._cancelled = set()  # request ids whose upload stops
        self.counters = {"up": 0, "down": 0}  # bytes of payload sent and received, for tests and benches
        self.binary = False  # the connection carries file bytes as binary frames (protocol.wire)
        self.chunk_bytes = CHUNK_BYTES
        self.background = BackgroundWriter()  # the downloads' writes, while the next pieces arrive
        self.unnamed_uploads = False  # the worker names an upload by its hash (capabilities.unnamed_uploads)
        self.fetch_files = False  # the worker sends many files in one reply (fetch_files in its requests)
        self._named = {}  # file identity (file_digests) -> SHA-256 the worker named its upload by
        self._thread = threading.Thread(target=self._run, name="scail2-client-transfer", daemon=True)
        self._thread.start()

    # -- called by the client ----------------------------------------------------------------------
    def use_framing(self, capabilities):
        """How the worker's ``capabilities`` say file bytes travel on this connection (again on each one)."""
        self.binary = capabilities.get("framing") == protocol.FRAMING_BINARY
        self.unnamed_uploads = capabilities.get("unnamed_uploads") is True
        self.fetch_files = "fetch_files" in (capabilities.get("requests") or ())
        chunk = capabilities.get("chunk_bytes")
        self.chunk_bytes = chunk if isinstance(chunk, int) and 0 < chunk <= protocol.MAX_PAYLOAD_BYTES else CHUNK_BYTES

    def submit(self, fields):
        """Queue a submit whose inputs are uploaded first (``fields``: the submit's, ``job_dir`` local)."""
        self.submits[fields.get("request_id")] = os.fspath(fields.pop("job_dir", "") or "")
        self._add(("submit", fields))

    def resume(self, fields):
        """Resume the job a local folder mirrors: the worker is sent its own folder, noted when the job was queued."""
        local = os.fspath(fields.get("job_dir") or "")
        try:
            remote = protocol.read_json_file(os.path.join(local, WORKER_JOB_NOTE), "remote job note")["job_dir"]
            if not isinstance(remote, str) or not remote:
                raise KeyError("job_dir")
        except (protocol.ProtocolError, KeyError, TypeError):
            self._deliver(_local("error", request_id=fields.get("request_id"), code="bad_input",
                                 message="{:s} holds no job of this remote worker: resume it where it ran".format(local)))
            return
        self.submits[fields.get("request_id")] = local
        self._send("resume", **dict(fields, job_dir=os.path.basename(remote.rstrip("/\\"))))

    def cancel_upload(self, request_id):
        self._cancelled.add(request_id)

    def upload_file(self, path):
        """Upload one file now, in the caller's thread (benches, tools); its blob reference."""
        size = os.path.getsize(path)
        return self._upload(path, None, [0], size)

    def fetch_folder(self, worker_job_dir, local_dir):
        """Fetch a job folder of the worker now, in the caller's thread (benches, tools)."""
        self.jobs["_fetch"] = (worker_job_dir, local_dir)
        try:
            self._sync("_fetch")
        finally:
            self.jobs.pop("_fetch", None)

    def wants(self, message):
        """Whether an incoming message is this module's: a reply to it, or an event of a mirrored job."""
        request_id = str(message.get("request_id") or "")
        stream = self._streams.get(request_id)
        if stream is not None and message.get("type") == "file_data":
            stream.take(message)  # on this (the socket's) thread, straight to the writer
            return True
        if stream is not None:
            del self._streams[request_id]  # its last reply (ok or error): answered below, as any reply
        if request_id.startswith(REQUEST_PREFIX):
            with self._cond:
                if request_id in self._unwanted:
                    self._unwanted.discard(request_id)
                else:
                    self._replies[request_id] = message
                self._cond.notify_all()
            return True
        if message.get("job") in self.jobs or (message.get("type") in ("queued", "error")
                                               and request_id in self.submits):
            self._add(("event", message))
            return True
        return False

    def reconnected(self, capabilities):
        """After a reconnection: fetch the mirrored jobs again, then pass ``capabilities`` on."""
        self._add(("resync", capabilities))

    # -- the thread ----------------------------------------------------------------------------------
    def _add(self, task):
        with self._cond:
            self._tasks.append(task)
            self._cond.notify_all()

    def _run(self):
        while not self._closing.is_set():
            with self._cond:
                while not self._tasks and not self._closing.is_set():
                    self._cond.wait(0.5)
                if self._closing.is_set():
                    return
                kind, item = self._tasks.popleft()
            try:
                getattr(self, "_do_" + kind)(item)
            except Exception as ex:  # a transfer's fault never stops the others
                self._deliver(_local("error", code=protocol.errors.TRANSFER_FAILED,
                                     message="transfer failed: {!s}".format(ex)[:300]))

    def _do_submit(self, fields):
        request_id = fields.get("request_id")
        try:
            fields["job"] = self._upload_inputs(fields.get("task", "generate"), dict(fields["job"]), request_id)
        except _Cancelled:
            self.submits.pop(request_id, None)
            self._cancelled.discard(request_id)
            self._deliver(_local("cancelled", request_id=request_id, was="uploading"))
            return
        except (OSError, TransferError) as ex:
            self.submits.pop(request_id, None)
            self._deliver(_local("error", request_id=request_id, code=protocol.errors.UPLOAD_FAILED,
                                 message="cannot upload the job's inputs: {!s}".format(ex)[:300],
                                 hint="check the input files and the connection to the worker"))
            return
        self._retrying(lambda: self._send("submit", **fields))

    def _do_event(self, message):
        kind = message.get("type")
        request_id = message.get("request_id")
        if request_id in self.submits and kind in ("queued", "error") and not message.get("job") in self.jobs:
            local = self.submits.pop(request_id)
            if kind == "queued":
                self.jobs[message["job"]] = (message.get("job_dir", ""), local)
                _note_worker_job(local, message.get("job_dir", ""))
                message = dict(message, job_dir=local, worker_job_dir=message.get("job_dir"))
            self._deliver(message)
            return
        remote, local = self.jobs[message["job"]]
        message = dict(message)
        if "job_dir" in message:
            message["job_dir"] = local
        if kind == "frame_ready" and message.get("path"):
            name = os.path.relpath(message["path"], remote).replace(os.sep, "/")
            try:
                self._fetch(remote, local, name)
            except TransferError:
                return  # gone meanwhile (a resumed job rewrites it): the folder is fetched at the end
            message["path"] = os.path.join(local, *name.split("/"))
        elif kind in END_EVENTS:
            self._sync(message["job"])
            for key in ("manifest", "record"):
                if message.get(key):
                    message[key] = os.path.join(local, os.path.basename(message[key]))
            del self.jobs[message["job"]]
        self._deliver(message)

    def _do_resync(self, capabilities):
        """Fetch every mirrored job again; one that ended meanwhile gets its end event from its folder."""
        for job_id in list(self.jobs):
            self._sync(job_id)
        if self.jobs:
            listed = self._retrying(lambda: self._request("list_jobs"))["jobs"]
            alive = {entry.get("job") for entry in listed if entry.get("status") in ("queued", "running")}
            for job_id in [job_id for job_id in self.jobs if job_id not in alive]:
                local = self.jobs[job_id][1]
                status = _read_status(os.path.join(local, "state.json"))
                if status in ("done", "cancelled"):
                    del self.jobs[job_id]
                    manifest = os.path.join(local, protocol.MANIFEST_NAME)
                    self._deliver(_local(status, job=job_id, job_dir=local, manifest=manifest))
        self._deliver(capabilities)

    # -- uploads -------------------------------------------------------------------------------------
    def _upload_inputs(self, task, job, request_id):
        paths = []
        if task == "generate":
            paths += [job.get(field) for field in INPUT_FIELDS]
            for field in LIST_FIELDS:
                paths += list(job.get(field) or [])
            paths += [lora.get("path") for lora in job.get("loras") or [] if isinstance(lora, dict)]
        else:
            paths.append(job.get("source"))
        paths = list(dict.fromkeys(p for p in paths if p))
        folders, patterns = {}, {}
        for path in paths:
            if os.path.isdir(path):
                folders[path] = folder_files(path)
            elif not os.path.isfile(path) and protocol.SEQUENCE_TOKEN.search(os.path.basename(path)):
                folders[path] = sequence_files(path)  # an image sequence: its folder's matching files go
                patterns[path] = os.path.basename(path)
            elif not os.path.isfile(path):
                raise TransferError("a remote worker takes files and folders of images, not {:s}".format(path))
        sizes = [os.path.getsize(f) for p in paths for f in folders.get(p, [p])]
        total, refs, done = sum(sizes), {}, [0]
        for path in paths:
            if path not in folders:
                refs[path] = self._upload(path, request_id, done, total)
                continue
            listing = [{"name": safe_name(f), "sha256": protocol.parse_blob_ref(
                self._upload(f, request_id, done, total))[0]} for f in folders[path]]
            folder = os.path.dirname(path) if path in patterns else path
            refs[path] = self._upload_listing(listing, safe_name(folder.rstrip("/\\")), request_id)
            if path in patterns:  # the worker's copy of the folder, and the sequence's pattern in it
                refs[path] += "/" + patterns[path]

        def ref(path):
            return refs.get(path, path) if path else path

        for field in INPUT_FIELDS + ("source",):
            if job.get(field):
                job[field] = ref(job[field])
        for field in LIST_FIELDS:
            if job.get(field):
                job[field] = [ref(p) for p in job[field]]
        if job.get("loras"):
            job["loras"] = [dict(lora, path=ref(lora.get("path"))) for lora in job["loras"]]
        return job

    def _upload_listing(self, listing, name, request_id):
        """Upload a folder's listing (as a blob of its own); the folder's reference."""
        data = json.dumps({"files": listing}, sort_keys=True).encode("utf-8")
        fd, temp = tempfile.mkstemp(prefix="scail2-listing-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            sha = protocol.parse_blob_ref(self._upload(temp, None, [0], len(data)))[0]  # no progress of its own
        finally:
            os.remove(temp)
        return protocol.blob_tree_ref(sha, name)

    def _upload(self, path, request_id, done, total):
        """Upload one file (resuming where the worker holds part of it); its blob reference.

        A file hashed before (`file_digests`, or named by this worker already) is asked for by its
        SHA-256 first, so what the worker holds is never sent again. Any other file goes at once as an
        unnamed upload the worker names by the hash of what arrives: hashing it here first would hold
        the wire idle for as long as a fast link takes to carry it.
        """
        size, identity = os.path.getsize(path), file_identity(path)
        sha = cached_sha256(path) or self._named.get(identity)
        if sha is None and not self.unnamed_uploads:
            sha = file_sha256(path)
        key = {"sha256": sha} if sha else {"upload": secrets.token_urlsafe(24)}
        finished = {}

        def go_on():
            status = self._request("blob_status", **key)
            have = status["have"]
            in_flight = collections.deque()  # request ids of chunks sent, oldest first
            offset = max(have, 0)
            # One buffer, read into again for every chunk: each chunk is sent before the next is read.
            buffer = memoryview(bytearray(self.chunk_bytes))
            with open(path, "rb", buffering=0) as fh:
                fh.seek(offset)
                while max(have, 0) < size:
                    if request_id in self._cancelled or self._closing.is_set():
                        raise _Cancelled()
                    while offset < size and len(in_flight) < (IN_FLIGHT if self.binary else 1):
                        piece = buffer[: fh.readinto(buffer)]
                        if not piece:
                            raise TransferError(f"{path} became shorter while it was uploaded: upload it again")
                        in_flight.append(self._ask("blob_put", piece, **key, size=size, offset=offset))
                        self.counters["up"] += len(piece)
                        offset += len(piece)
                    try:
                        status = self._answer(in_flight.popleft(), "blob_put")
                    except TransferError:
                        self._forget(in_flight)
                        raise
                    have = status["have"]
                    self._deliver(_local("progress", request_id=request_id, phase="upload",
                                         bytes=done[0] + have, total=total))
            if size == 0 and not status.get("complete"):
                status = self._request("blob_put", **key, size=0, offset=0, data="")
            finished.update(status)

        self._retrying(go_on)
        if sha is None:
            sha = finished.get("sha256")
            if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
                raise TransferError("the worker did not name the uploaded file: upload it again")
            if file_identity(path) == identity:  # not written meanwhile: the hash is this version's
                self._named[identity] = sha
        done[0] += size
        return protocol.blob_ref(sha, safe_name(path))

    # -- requests ------------------------------------------------------------------------------------
    def _request(self, kind, **fields):
        """Send a request and wait for its reply; TransferError for an error reply, OSError when cut."""
        return self._answer(self._ask(kind, None, **fields), kind)

    def _ask(self, kind, payload, stream=None, **fields):
        """Send a request (with file bytes: a binary frame, or base64 in the line); its request id.
        ``stream``: where its file_data replies go as they arrive (a `downloads.FileStream`)."""
        self._count += 1
        request_id = "{:s}{:d}".format(REQUEST_PREFIX, self._count)
        if stream is not None:
            self._streams[request_id] = stream  # before its first reply can arrive
        if payload is not None and self.binary:
            fields[protocol.PAYLOAD_FIELD] = payload
        elif payload is not None:
            fields["data"] = base64.b64encode(payload).decode("ascii")
        self._send(kind, request_id=request_id, **fields)
        return request_id

    def _forget(self, request_ids):
        """Replies not wanted any more (asked ahead of a file's end or change): dropped when they come."""
        with self._cond:
            for request_id in request_ids:
                if self._replies.pop(request_id, None) is None:
                    self._unwanted.add(request_id)

    def _answer(self, request_id, kind, heard=None):
        """The reply to ``request_id``; TransferError for an error reply, OSError when cut. ``heard()``:
        when the worker last sent something for the request (the wait counts from then)."""
        deadline = time.monotonic() + REPLY_TIMEOUT_S
        with self._cond:
            while request_id not in self._replies:
                left = max(deadline, heard() + REPLY_TIMEOUT_S if heard else 0) - time.monotonic()
                if left <= 0 or self._closing.is_set() or not self._connected():
                    raise ConnectionError("no reply from the worker to " + kind)
                self._cond.wait(min(left, 0.2))
            reply = self._replies.pop(request_id)
        if reply.get("type") == "error":
            raise TransferError(reply.get("message", "refused"))
        return reply

    def _retrying(self, step):
        """Run ``step`` until it succeeds, waiting for the connection to come back after each cut."""
        deadline = time.monotonic() + RETRY_FOR_S
        while True:
            try:
                return step()
            except (ConnectionError, WorkerClientError):
                if self._closing.is_set() or time.monotonic() > deadline:
                    raise TransferError("the connection to the worker did not come back") from None
                while not self._connected() and not self._closing.is_set() and time.monotonic() < deadline:
                    time.sleep(0.2)


def _note_worker_job(local, remote):
    """Note in the local job folder which folder of the worker it mirrors (written whole, or not at all)."""
    if not local or not remote:
        return
    os.makedirs(local, exist_ok=True)
    note = os.path.join(local, WORKER_JOB_NOTE)
    with open(note + ".tmp", "w", encoding="utf-8") as fh:
        json.dump({"job_dir": remote}, fh)
    os.replace(note + ".tmp", note)


def _read_status(path):
    try:
        data = protocol.read_json_file(path)
    except protocol.ProtocolError:
        return None
    return data.get("status") if isinstance(data, dict) else None


def _local(kind, **fields):
    message = {"v": protocol.PROTOCOL_VERSION, "type": kind, "job": fields.pop("job", None), "local": True}
    if kind == "error":
        fields.setdefault("hint", "")
    message.update(fields)
    return message
