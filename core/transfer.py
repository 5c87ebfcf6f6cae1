# SPDX-License-Identifier: GPL-3.0-or-later
"""Files over the connection to a remote worker (transfer mode), for `worker_client.WorkerClient`.

Standard library only and no ``bpy``. A remote worker reads none of Blender's paths and
Blender reads none of its: `Transfers` uploads a job's inputs as blobs before its ``submit``,
and mirrors the job's folder on the worker into the job folder Blender chose, so every event
the queue sees names local files, exactly as with a local worker:

* submit: each input file is uploaded first (`uploads`): the job then names ``blob:<sha>/<name>``.
  Progress: local ``progress`` events with phase ``upload`` (``bytes``, ``total``).
* ``frame_ready``: the frame is fetched first, then the event names the local copy.
* ``done``, ``cancelled``, ``error``: the whole folder is fetched (what changed), phase
  ``download``, then the event names the local folder and manifest.
* after a reconnection, every job still mirrored is fetched again before the worker's
  ``capabilities`` is passed on (the queue then asks which jobs ended meanwhile).

Downloads (`downloads`) are written to ``.NAME.part`` beside the file and renamed when whole; a
cut resumes at the part file's size. One thread does all of it, in the order events arrived.
"""

import base64
import collections
import json
import os
import threading
import time

from .. import protocol
from ..protocol.direct_io import BackgroundWriter
from .downloads import Downloads, TransferError, usable_cores
from .uploads import UploadCancelled, Uploads, local_message
from .worker_tls import WorkerClientError

CHUNK_BYTES = 512 << 10  # a line-framing worker's (capabilities.chunk_bytes); base64 keeps a line under 1 MiB
REPLY_TIMEOUT_S = 60.0
RETRY_FOR_S = 600.0  # how long a transfer waits for the connection to come back
END_EVENTS = ("done", "cancelled", "error")
REQUEST_PREFIX = "xfer-"
FEW_CORES = 2  # where a writer thread for small downloaded files has no core of its own
WORKER_JOB_NOTE = ".scail2-worker-job.json"  # in a mirrored job folder: the worker's folder it mirrors (resume)


class Transfers(Uploads, Downloads):
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
        self.write_files_here = usable_cores() <= FEW_CORES  # small fetched files: `downloads.WritesHere`
        self.unnamed_uploads = False  # the worker names an upload by its hash (capabilities.unnamed_uploads)
        self.fetch_files = False  # the worker sends many files in one reply (fetch_files in its requests)
        self.fetch_changed = False  # ... and lists the folder in that reply too (fetch_changed)
        self._named = {}  # file identity (file_digests) -> SHA-256 the worker named its upload by
        self._thread = threading.Thread(target=self._run, name="scail2-client-transfer", daemon=True)
        self._thread.start()

    # -- called by the client ----------------------------------------------------------------------
    def use_framing(self, capabilities):
        """How the worker's ``capabilities`` say file bytes travel on this connection (again on each one)."""
        self.binary = capabilities.get("framing") == protocol.FRAMING_BINARY
        self.unnamed_uploads = capabilities.get("unnamed_uploads") is True
        self.fetch_files = "fetch_files" in (capabilities.get("requests") or ())
        self.fetch_changed = "fetch_changed" in (capabilities.get("requests") or ())
        chunk = capabilities.get("chunk_bytes")
        self.chunk_bytes = chunk if isinstance(chunk, int) and 0 < chunk <= protocol.MAX_PAYLOAD_BYTES else CHUNK_BYTES

    def submit(self, fields):
        """Queue a submit whose inputs are uploaded first (``fields``: the submit's, ``job_dir`` local)."""
        self.submits[fields.get("request_id")] = os.fspath(fields.pop("job_dir", "") or "")
        self._add(("submit", fields))

    def check_inputs(self, fields):
        """Queue a check_inputs whose inputs are uploaded first: the worker checks only what it holds, and the
        Generate that follows finds them there (asked for by their hashes, not sent again)."""
        self._add(("check", fields))

    def resume(self, fields):
        """Resume the job a local folder mirrors: the worker is sent its own folder, noted when the job was queued."""
        local = os.fspath(fields.get("job_dir") or "")
        try:
            remote = protocol.read_json_file(os.path.join(local, WORKER_JOB_NOTE), "remote job note")["job_dir"]
            if not isinstance(remote, str) or not remote:
                raise KeyError("job_dir")
        except (protocol.ProtocolError, KeyError, TypeError):
            self._deliver(local_message(
                "error", request_id=fields.get("request_id"), code="bad_input",
                message="{:s} holds no job of this remote worker: resume it where it ran".format(local)))
            return
        self.submits[fields.get("request_id")] = local
        self._send("resume", **dict(fields, job_dir=os.path.basename(remote.rstrip("/\\"))))

    def cancel_upload(self, request_id):
        self._cancelled.add(request_id)

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
        if stream is not None and message.get("type") == "files":
            stream.listing(message)  # a fetch_changed reply's first: what its pieces will be
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
                self._deliver(local_message("error", code=protocol.errors.TRANSFER_FAILED,
                                            message="transfer failed: {!s}".format(ex)[:300]))

    def _do_submit(self, fields):
        request_id = fields.get("request_id")
        try:
            fields["job"] = self._upload_inputs(fields.get("task", "generate"), dict(fields["job"]), request_id)
        except UploadCancelled:
            self.submits.pop(request_id, None)
            self._cancelled.discard(request_id)
            self._deliver(local_message("cancelled", request_id=request_id, was="uploading"))
            return
        except (OSError, TransferError) as ex:
            self.submits.pop(request_id, None)
            self._deliver(local_message("error", request_id=request_id, code=protocol.errors.UPLOAD_FAILED,
                                        message="cannot upload the job's inputs: {!s}".format(ex)[:300],
                                        hint="check the input files and the connection to the worker"))
            return
        self._retrying(lambda: self._send("submit", **fields))

    def _do_check(self, fields):
        request_id = fields.get("request_id")
        try:
            fields["job"] = self._upload_inputs("generate", dict(fields["job"]), request_id)
        except (OSError, TransferError, UploadCancelled) as ex:
            self._deliver(local_message("error", request_id=request_id, code=protocol.errors.UPLOAD_FAILED,
                                        message="cannot upload the job's inputs to check them: {!s}".format(ex)[:300],
                                        hint="check the input files and the connection to the worker"))
            return
        self._retrying(lambda: self._send(protocol.CHECK_INPUTS_REQUEST, **fields))

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
                    self._deliver(local_message(status, job=job_id, job_dir=local, manifest=manifest))
        self._deliver(capabilities)

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
