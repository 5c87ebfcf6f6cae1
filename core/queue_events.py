# SPDX-License-Identifier: GPL-3.0-or-later
"""What a worker says, applied to a `core.queue.JobQueue`'s jobs: a table from event type to handler.

Standard library only and no ``bpy``. `QueueEvents` is the queue's half that reads: `_handle`
routes each event (the answer to one of the queue's own requests, an error the client made
itself, or a job's event) to its handler method; `_reconcile` settles the jobs after a
reconnection. The half that sends, and the bookkeeping both use, is `core.queue.JobQueue`.
"""

import os

from .. import protocol
from ..protocol import errors
from .job import as_event
from .util import one_line, read_json

CANCEL_PREFIX = "cancel-"  # request ids of cancel requests
LIST_REQUEST = "list-after-reconnect"
WORKER_JOBS_REQUEST = "list-worker-jobs"  # the worker's queue as this token sees it (`JobQueue.worker_jobs`)
ENDED = ("done", "cancelled", "error")


class QueueEvents:
    """`JobQueue`'s handling of the worker's messages (a mix-in: the queue holds the state it changes)."""

    def _job_of(self, event):
        job = None
        if getattr(event, "job", None):
            job = self.find(event.job)
        if job is None and event.request_id in self.jobs:
            job = self.jobs[event.request_id]
        return job

    def _handle(self, message):
        """One message from the worker (or the client), read through its event record."""
        try:
            event = as_event(message)
        except protocol.ProtocolError as ex:  # parse_line has checked it: only a client-made message can be off
            self.notice = one_line(str(ex))
            return
        kind = event.TYPE
        if not event.local:
            self._heard = True
        if kind == "capabilities":
            self._on_capabilities(message)
            return
        if self._answers_own_request(event, message):
            return
        if kind == "error" and event.local:
            getattr(self, self._CLIENT_ERRORS.get(event.code, "_on_client_notice"))(event)
            return
        job = self._job_of(event)
        if job is None and getattr(event, "job", None):
            # Not this session's: another session's of this artist, or (to an admin) another artist's.
            self._on_worker_job_event(event)
            return
        if job is None:
            if kind == "error" and event.code == errors.UNAUTHORIZED:
                # The token is refused and the client tries it no more: the jobs it followed end here
                # (resumable), so a token changed in the preferences is used by the next Generate.
                self._worker_gone(event.message, event.hint)
            if kind == "error":  # about the connection: what to do comes with it
                self.notice = one_line("{:s}: {:s}".format(event.message, event.hint) if event.hint else event.message)
            return
        if job.finished:
            return
        now = self._clock()
        handler = self._JOB_EVENTS.get(kind)
        if handler is not None:
            getattr(self, handler)(job, event, now)
            self._follow_worker_jobs(kind)

    # A job's events, by type: the handler method's name, called with (job, event, now).
    _JOB_EVENTS = {
        "queued": "_on_queued",
        "started": "_on_started",
        "progress": "_on_progress",
        "frame_ready": "_on_frame",
        "done": "_on_done",
        "cancelled": "_on_cancelled",
        "error": "_on_job_error",
    }
    # The client's own errors (``"local": True``), by code: the handler method's name, called with (event).
    _CLIENT_ERRORS = {
        errors.CONNECTION_LOST: "_on_connection_lost",
        errors.WORKER_EXITED: "_on_worker_exited",
        errors.PROTOCOL_MISMATCH: "_on_protocol_mismatch",
    }

    def _on_capabilities(self, message):
        self.capabilities = message
        if self._reconnected:
            self._reconnected = False
            self.notice = ""  # "lost the connection ...": connected again
            self._request("list_jobs", request_id=LIST_REQUEST)  # events may have been missed meanwhile
            if self.listing_worker_jobs:  # asked before the connection was lost: asked again
                self._request("list_jobs", request_id=WORKER_JOBS_REQUEST)

    def _answers_own_request(self, event, message):
        """Handle the answer to a check_inputs, the list after a reconnection or a cancel; False for others."""
        run = self.checks.get(event.request_id) if isinstance(event.request_id, str) else None
        if run is not None:  # a check_inputs request's answer (a remote worker's: after its inputs' upload progress)
            if run.pending and event.TYPE != "progress":
                run.on_message(message)
                self._change(run, "checked")
            return True
        if event.TYPE == "jobs" and event.request_id == LIST_REQUEST:
            self._reconcile(event.jobs)
            return True
        if event.TYPE == "jobs" and event.request_id == WORKER_JOBS_REQUEST:
            self.worker_jobs = [entry for entry in event.jobs if entry.get("status") in ("queued", "running")]
            self.worker_jobs_listed_at, self.listing_worker_jobs = self._clock(), False
            self._change(None, "worker_jobs")
            return True
        if str(event.request_id or "").startswith(CANCEL_PREFIX):
            if event.TYPE == "error" and event.code != errors.UNKNOWN_JOB:
                self.notice = one_line(event.message)
            return True  # a cancel's own reply; the job's end comes as its own event
        return False

    def _on_worker_job_event(self, event):
        """Another session's job (to an admin: any artist's) joined the worker's queue, started or ended: its line
        in `worker_jobs` follows at once, and the list is asked for again (the places of the others changed)."""
        entry = next((entry for entry in self.worker_jobs if entry.get("job") == event.job), None)
        if entry is not None and event.TYPE == "progress":  # where it stands, as its artist sees it
            entry["status"], entry["progress"] = "running", event.to_dict()
            self._change(None, "worker_jobs")
        elif entry is not None and event.TYPE in ("started",) + ENDED:
            if event.TYPE == "started":
                entry["status"] = "running"
            else:
                self.worker_jobs.remove(entry)
            self._change(None, "worker_jobs")
        self._follow_worker_jobs(event.TYPE)

    def _follow_worker_jobs(self, kind):
        """Once the artist has listed the worker's jobs, a job joining, starting or leaving its queue has the list
        asked for again: the panel's list follows what other artists queue, and every place in it."""
        if kind in ("queued", "started") + ENDED and self.worker_jobs_listed_at is not None \
                and not self.listing_worker_jobs:
            self.list_worker_jobs()

    def _on_connection_lost(self, event):
        self.notice = one_line(event.message)
        self._reconnected = True

    def _on_worker_exited(self, event):
        self._worker_gone(event.message or "the worker stopped", event.hint, killed=bool(event.signal))

    def _on_protocol_mismatch(self, event):
        # Nothing this worker says can be read: end its jobs.
        self.notice = one_line(event.message)
        self._pending = []
        for job in self.active_jobs():
            self._fail(job, event.code, event.message, event.hint)
        self._drop_client(0.5)

    def _on_client_notice(self, event):
        self.notice = one_line(event.message)

    def _on_queued(self, job, event, now):
        job.id = event.job
        job.job_dir = event.job_dir or job.job_dir
        job.position = event.position
        job.others_ahead = event.others_ahead or 0
        job.status = "queued"
        self._change(job, "queued")
        if job.cancel_requested:
            self._request("cancel", job=job.id, request_id=CANCEL_PREFIX + job.key)

    def _on_started(self, job, event, now):
        job.on_started(event, now)
        self._change(job, "started")

    def _on_progress(self, job, event, now):
        job.on_progress(event, now)
        self._change(job, "progress")

    def _on_frame(self, job, event, now):
        job.on_frame(event, now)
        self._change(job, "frame")

    def _on_done(self, job, event, now):
        job.manifest = event.manifest or ""
        job.job_dir = event.job_dir or job.job_dir
        if job.task != "generate":
            job.record = os.path.join(job.job_dir, protocol.SEGMENT_RECORD)
            job.frames_ready = event.frames or job.frames
            job.warnings = list(event.warnings or job.warnings)
        self._end(job, "done")

    def _on_cancelled(self, job, event, now):
        self._end(job, "cancelled")

    def _on_job_error(self, job, event, now):
        self._fail(job, event.code, event.message, event.hint)

    def _reconcile(self, listed):
        """After a reconnection: jobs the worker no longer lists ended meanwhile; their folders say how."""
        alive = {entry.get("job"): entry for entry in listed if entry.get("status") in ("queued", "running")}
        for job in self.active_jobs():
            if job.id in alive and alive[job.id]["status"] == "queued" and job.status == "running":
                # A worker restarted meanwhile queued it again (it keeps its queue): it starts again later.
                job.status, job.position = "queued", alive[job.id].get("position") or 0
                job.others_ahead = alive[job.id].get("others_ahead") or 0
                self._change(job, "queued")
            if not job.id or job.id in alive:
                continue
            state = read_json(os.path.join(job.job_dir, protocol.STATE_NAME))
            manifest = os.path.join(job.job_dir, protocol.MANIFEST_NAME)
            record = os.path.join(job.job_dir, protocol.SEGMENT_RECORD)
            if job.task != "generate" and read_json(record).get("status") == "done":
                job.record = record
                self._end(job, "done")
            elif job.task == "generate" and state.get("status") == "done" and os.path.isfile(manifest):
                job.manifest = manifest
                self._end(job, "done")
            elif state.get("status") == "cancelled" or job.cancel_requested:
                self._end(job, "cancelled")
            else:
                self._fail(job, errors.CONNECTION_LOST, "the job ended while the connection to the worker was lost",
                           "its frames so far are in " + job.job_dir)

