# SPDX-License-Identifier: GPL-3.0-or-later
"""The session's job queue over one worker, pumped by `JobQueue.poll`; the jobs are `core.job.Job`.

Standard library only and no ``bpy`` (tests pump a queue against a real worker
without Blender). The add-on keeps one `JobQueue` per session and polls it from
a ``bpy.app.timers`` callback (or in a loop, in background mode); nothing here
ever blocks for long:

* `JobQueue.submit` returns a `Job` at once. The worker is started (a local
  ``python -m backend serve`` subprocess, see `LocalWorker`) or connected to (a
  worker serving TCP, see `RemoteWorker`: connecting runs in a thread) on the
  first submit (`core.connection.WorkerConnection`); requests wait in the queue
  until it can take them.
* `JobQueue.poll` reads what the worker said and returns the `Change` list of
  jobs whose state changed: ``queued``, ``started``, ``progress``, ``frame``
  (a new preview frame), ``done``, ``cancelled``, ``failed``.
* `Job` holds everything the interface shows: status, phase, segment i/n, step
  j/m, an ETA from the step timing, the latest frame, the error (code, one line,
  hint) and the manifest once done.
* A job's ``task`` is a generation (``"generate"``, a ``protocol.JobSpec``) or a
  segmentation (``"masks"`` or ``"matte"``, a ``protocol.SegmentSpec``): the same
  queue, events and cancel; a segmentation reports frame i/n and ends with the
  ``segment.json`` record of its folder (``Job.record``).
* `JobQueue.cancel` and `JobQueue.shutdown` (stops a local worker cleanly).
* `JobQueue.check_inputs` asks the worker to check a job's inputs without running it; the
  `core.input_checks.CheckRun` it returns is filled in by the answer (a ``checked`` change).

Several jobs can be queued: the worker runs them one at a time in order.
"""

__all__ = (
    "JobQueue",
    "MISSING_PACKAGES_HINT",
    "RESUME_HINT",
)

import collections
import os
import time
import uuid

from .. import protocol
from ..protocol import errors
from . import worker_client
from .connection import WorkerConnection
from .input_checks import CHECK_REQUEST_PREFIX, CheckRun
from .job import Change, Job, JobError
from .queue_events import CANCEL_PREFIX, WORKER_JOBS_REQUEST, QueueEvents
from .util import one_line

KEEP_FINISHED = 50  # finished jobs kept in the list of a session
RESUME_HINT = "its finished segments are kept: Resume continues the job in its folder"
MISSING_PACKAGES_HINT = "this Python lacks the backend's packages: use Set Up Backend in the add-on preferences"


class JobQueue(QueueEvents):
    """The session's jobs and the worker that runs them. Pump it with `poll`; never blocks for long."""

    def __init__(self, worker, jobs_root, clock=time.monotonic):
        self.connection = WorkerConnection(worker)
        self.jobs_root = jobs_root
        self.jobs = collections.OrderedDict()  # key -> Job, oldest first
        self.checks = collections.OrderedDict()  # key -> CheckRun: the check_inputs requests
        self.capabilities = None
        self.notice = ""  # one line about the worker itself (lost connection, exit), for the interface
        self._clock = clock
        self._pending = []  # (kind, fields) to send once the client is ready
        self._changes = []
        self._pending_worker = None  # a new worker setting, applied when idle
        self._reconnected = False
        # The remote worker's queued and running jobs this token may see (an admin: every artist's), as listed
        # last, and when: this session's own and its others (another Blender, yesterday's). A list is awaited.
        self.worker_jobs, self.worker_jobs_listed_at, self.listing_worker_jobs = [], None, False
        self._heard = False  # the current worker has said something

    # -- state -----------------------------------------------------------------------------------
    @property
    def busy(self):
        return (any(job.active for job in self.jobs.values()) or any(run.pending for run in self.checks.values())
                or self.listing_worker_jobs)

    def active_jobs(self):
        return [job for job in self.jobs.values() if job.active]

    def running_job(self):
        return next((job for job in self.jobs.values() if job.status == "running"), None)

    def get(self, key):
        return self.jobs.get(key)

    def find(self, worker_id):
        return next((job for job in self.jobs.values() if job.id and job.id == worker_id), None)

    @property
    def worker(self):
        """The worker's setting in use: a LocalWorker or RemoteWorker."""
        return self.connection.worker

    @property
    def client(self):
        """The `worker_client.WorkerClient` of the worker in use; None when there is none."""
        return self.connection.client

    @property
    def worker_alive(self):
        return self.connection.alive

    def list_worker_jobs(self):
        """Ask the worker for its queued and running jobs this token may see; the answer lands in `worker_jobs`."""
        self.listing_worker_jobs = True
        self._request("list_jobs", request_id=WORKER_JOBS_REQUEST)

    def cancel_worker_job(self, worker_id):
        """Cancel one of `worker_jobs` by its worker id (an admin: anyone's); False when it is not listed."""
        own = self.find(worker_id)
        if own is not None:
            return self.cancel(own.key)
        if not any(entry.get("job") == worker_id for entry in self.worker_jobs):
            return False
        self._request("cancel", job=worker_id, request_id=CANCEL_PREFIX + worker_id)
        self.list_worker_jobs()  # answered after the cancel: a queued job is gone from it, a running one stopping
        return True

    def signed_in_as(self):
        """Who this session is on a worker several artists share (one line for the panel); "" elsewhere."""
        capabilities = self.capabilities or {}
        if not capabilities.get("shared") or not self.worker_alive:
            return ""
        who = capabilities.get("identity") or "the worker's shared token (no artist's name)"
        admin = " (admin: sees and cancels every artist's jobs)" if capabilities.get("admin") else ""
        return "On the {:s} as {:s}{:s}".format(self.worker.describe(), who, admin)

    def new_job_dir(self):
        """A fresh folder name under the jobs root: ``20250101-120000-1a2b3c``."""
        stamp = time.strftime("%Y%m%d-%H%M%S")
        return os.path.join(self.jobs_root, "{:s}-{:s}".format(stamp, uuid.uuid4().hex[:6]))

    def set_worker(self, worker):
        """Use ``worker`` from the next job on; a running worker is stopped once idle."""
        if worker == self.worker:
            self._pending_worker = None
            return
        if self.busy:
            self._pending_worker = worker
            return
        self._drop_client()
        self.connection.worker = worker

    # -- requests --------------------------------------------------------------------------------
    def resume(self, job):
        """Continue the ended generation ``job`` in its folder (its finished segments are kept); the new Job."""
        meta = dict(job.meta, resumed_from=job.key)
        return self.submit(job.spec, job_dir=job.job_dir, meta=meta, resume=True)

    def submit(self, spec, job_dir=None, meta=None, task="generate", resume=False):
        """Queue ``spec`` (a protocol.JobSpec, or a SegmentSpec with its ``task``, or its dict); returns the Job.

        ``resume``: continue the generation already in ``job_dir`` (the worker reads its manifest).
        """
        data = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
        job = Job(key=uuid.uuid4().hex[:10], spec=data, task=task, job_dir=job_dir or self.new_job_dir(),
                  meta=dict(meta or {}), submitted_at=self._clock())
        self.jobs[job.key] = job
        finished = [key for key, other in self.jobs.items() if other.finished]
        for key in finished[:max(0, len(finished) - KEEP_FINISHED)]:
            del self.jobs[key]
        try:
            protocol.spec_from_submit({"task": task, "job": data})
        except protocol.ProtocolError as ex:
            self._fail(job, errors.BAD_INPUT, str(ex))
            return job
        if resume:
            self._request("resume", job_dir=job.job_dir, request_id=job.key)
            return job
        extra = {"task": task} if task != "generate" else {}  # a generation's submit is as before tasks
        self._request("submit", job=data, job_dir=job.job_dir, request_id=job.key, **extra)
        return job

    def check_inputs(self, spec, meta=None):
        """Ask the worker to check ``spec``'s inputs (a JobSpec or its dict); the `CheckRun` its answer fills in."""
        data = spec.to_dict() if hasattr(spec, "to_dict") else dict(spec)
        run = CheckRun(CHECK_REQUEST_PREFIX + uuid.uuid4().hex[:10], data, dict(meta or {}))
        self.checks[run.key] = run
        for key in [key for key, other in self.checks.items() if not other.pending][:-KEEP_FINISHED]:
            del self.checks[key]
        self._request(protocol.CHECK_INPUTS_REQUEST, job=data, request_id=run.key)
        return run

    def cancel(self, key):
        """Cancel a job (queued or running); the worker confirms with ``cancelled``. False if it has ended."""
        job = self.jobs.get(key)
        if job is None or not job.active:
            return False
        job.cancel_requested = True
        if not job.id:
            if self.client is not None and self.client.cancel_upload(key):
                return True  # its inputs are still being uploaded: the upload stops and says so
            unsent = [item for item in self._pending if item[0] == "submit" and item[1].get("request_id") == key]
            if unsent or (self.client is None and not self.connection.connecting):
                self._pending = [item for item in self._pending if item not in unsent]
                self._end(job, "cancelled")
            return True  # else sent once the worker has accepted the job
        self._request("cancel", job=job.id, request_id=CANCEL_PREFIX + job.key)
        return True

    def forget(self, key):
        """Drop a finished job from the list."""
        job = self.jobs.get(key)
        if job is not None and job.finished:
            del self.jobs[key]

    def shutdown(self, timeout=5.0):
        """Stop a local worker (its running job stays resumable on disk); disconnect from a remote one.

        A remote worker keeps running, without this session's jobs: they are cancelled first.
        """
        if self.client is not None and not self.worker_is_local():
            for job in self.active_jobs():
                if job.id:
                    try:
                        self.client.send("cancel", job=job.id, request_id=CANCEL_PREFIX + job.key)
                    except worker_client.WorkerClientError:
                        break
        for job in self.active_jobs():
            job.error = JobError(errors.STOPPED, "the worker was stopped")
            self._end(job, "cancelled")
        self._fail_checks("the worker was stopped")
        self._pending.clear()
        self._drop_client(timeout)
        self._changes.clear()

    # -- pumping ---------------------------------------------------------------------------------
    def poll(self, timeout=0.0):
        """Read the worker's messages; return the `Change` list since the last poll.

        ``timeout``: wait up to that long for the worker's first message (0: never wait).
        """
        self._check_connection()
        if self.client is not None:
            self._flush()
            try:
                messages = self.client.poll(timeout=timeout if not self._pending else 0.0)
            except Exception as ex:  # a client bug must not break Blender's timer
                messages = [worker_client.local_error(errors.CLIENT_FAILED, str(ex))]
            for message in messages:
                self._handle(message)
        elif timeout > 0:
            time.sleep(timeout)
        if self._pending_worker is not None and not self.busy:
            worker, self._pending_worker = self._pending_worker, None
            self.set_worker(worker)
        changes, self._changes = self._changes, []
        return changes

    def wait(self, job, timeout=None, interval=0.1, on_change=None):
        """Pump until ``job`` has finished (or ``timeout`` s passed); ``on_change`` gets every Change list."""
        deadline = None if timeout is None else self._clock() + timeout
        while job.active:
            changes = self.poll(timeout=interval)
            if on_change is not None and changes:
                on_change(changes)
            if not job.active:
                break
            if deadline is not None and self._clock() > deadline:
                return False
        return True

    def worker_is_local(self):
        return self.connection.is_local()

    # -- internals -------------------------------------------------------------------------------
    def _request(self, kind, **fields):
        self._pending.append((kind, fields))
        self._ensure_client()
        self._flush()

    def _ensure_client(self):
        """Start the worker (or begin connecting) when there is none that lives."""
        if self.connection.connecting or self.connection.alive:
            return
        if self.client is not None:
            self._retire_client()
        if self.connection.is_local():
            try:
                self._heard = False
                self.connection.start_local()
                self.notice = ""
            except worker_client.WorkerClientError as ex:
                self.notice = one_line(str(ex))
                self._fail_unsent(errors.WORKER_NOT_STARTED, str(ex),
                                  "check the backend Python in the add-on preferences")
            return
        self.connection.start_connecting()
        self.notice = "Connecting to the {:s}".format(self.worker.describe())

    def _check_connection(self):
        if not self.connection.connecting:
            if self._pending and self.client is None:
                self._ensure_client()  # jobs waiting for a worker that ended
            return
        result = self.connection.connected()
        if result is None:
            return
        if isinstance(result, Exception):
            self.notice = one_line(str(result))
            self._fail_unsent(errors.CONNECTION_FAILED, str(result),
                              "check the worker address and token in the add-on preferences")
        else:
            self._heard = True
            self.notice = ""

    def _flush(self):
        client = self.client
        while client is not None and self._pending:
            kind, fields = self._pending[0]
            try:
                client.send(kind, **fields)
            except worker_client.WorkerClientError:
                return  # kept for later; a worker that has ended says so through poll (worker_exited)
            except protocol.ProtocolError as ex:  # unreachable for our own requests; never loop on it
                self._pending.pop(0)
                job = self.jobs.get(fields.get("request_id")) if kind == "submit" else None
                if job is not None:
                    self._fail(job, errors.BAD_REQUEST, str(ex))
                continue
            self._pending.pop(0)
            if kind == "submit" and fields.get("request_id") in self.jobs:
                self.jobs[fields["request_id"]].sent = True

    def _fail_unsent(self, code, message, hint=""):
        """Fail the jobs not yet sent: the worker could not be started or reached."""
        self._pending = []
        self._fail_checks(message)
        for job in self.active_jobs():
            if not job.sent:
                self._fail(job, code, message, hint)

    def _retire_client(self):
        """Read the last words of an ended worker, then let it go."""
        try:
            messages = self.client.poll()
        except Exception:
            messages = []
        for message in messages:
            self._handle(message)
        if self.client is not None:
            code = self.client.returncode
            self._worker_gone(worker_client.stopped_message(code), killed=code is not None and code < 0)

    def _worker_gone(self, message, hint="", killed=False):
        """The worker ended: every job it had taken ends with it; jobs not yet sent wait for the next one.

        ``killed``: by a signal, so its last output line is not the cause; a generation it ran can be resumed.
        """
        detail = ""
        if killed:
            hint = RESUME_HINT
        elif self.client is not None:
            tail = [line for line in self.client.stderr_tail(5) if line.strip()]
            detail = tail[-1] if tail else ""
        if "No module named" in message + hint + detail:
            hint = MISSING_PACKAGES_HINT
        self.notice = one_line(message)
        for job in self.active_jobs():
            if not job.sent and self._heard:
                continue  # a worker that did run: the next one takes it
            if job.cancel_requested:
                self._end(job, "cancelled")
            else:
                self._fail(job, errors.WORKER_EXITED, message, hint or detail)
        self._pending = [(kind, fields) for kind, fields in self._pending if kind == "submit" and self._heard]
        self._fail_checks(message)
        self._drop_client(0.5)

    def _fail_checks(self, message):
        """The check_inputs requests without an answer end with the worker (or its connection); so does a
        list of the worker's jobs asked for."""
        self.listing_worker_jobs = False
        for run in self.checks.values():
            if run.pending:
                run.fail(one_line(message))
                self._change(run, "checked")

    def _drop_client(self, timeout=5.0):
        self.connection.drop(timeout)

    def _change(self, job, kind):
        self._changes.append(Change(job, kind))

    def _end(self, job, status):
        job.status = status
        job.finished_at = self._clock()
        job.eta_s = None
        self._change(job, "failed" if status == "failed" else status)

    def _fail(self, job, code, message, hint=""):
        job.error = JobError(code or "error", one_line(message) or code, one_line(hint))
        self._end(job, "failed")
