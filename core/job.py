# SPDX-License-Identifier: GPL-3.0-or-later
"""SCAIL-2 jobs as Blender sees them: `Job` (status, phase, segment i/n, step j/m, an ETA from the
step timing, the latest frame, the error, the manifest once done), the worker settings and `Change`.

Standard library only and no ``bpy``. `core.queue.JobQueue` runs the jobs over one worker.
"""

__all__ = (
    "ACTIVE",
    "Change",
    "FINISHED",
    "Job",
    "JobError",
    "LocalWorker",
    "RemoteWorker",
    "as_event",
    "format_duration",
    "parse_address",
)

import ipaddress
import os
from dataclasses import dataclass, field

from .. import protocol
from ..protocol.progress_text import progress_text
from .util import one_line

# Errors that end a job with its worker, not because of it: such a generation can be resumed, also
# automatically once (preferences).
WORKER_STOPPED = protocol.errors.WORKER_STOPPED
# ... and a folder that could not be written (disk full, read-only): resumed by hand once it is fixed.
RESUMABLE_ERRORS = protocol.errors.RESUMABLE
# Job statuses. "submitting": not yet accepted by the worker.
ACTIVE = ("submitting", "queued", "running")
FINISHED = ("done", "failed", "cancelled")
TRANSFER_NAMES = {"upload": "Uploading the inputs", "download": "Fetching the results"}  # a remote worker's


def as_event(message):
    """``message`` as its event record: a record as it is, a message dict (``{"type": ..., ...}``) read
    through the contract (``protocol.ProtocolError`` for a field the record does not know)."""
    return message if isinstance(message, protocol.Event) else protocol.decode_event(message)


def format_duration(seconds):
    """``75`` -> ``"1 min 15 s"``; ``None`` -> ``""``."""
    if seconds is None:
        return ""
    seconds = max(0, int(round(seconds)))
    if seconds < 60:
        return "{:d} s".format(seconds)
    minutes, seconds = divmod(seconds, 60)
    if minutes < 60:
        return "{:d} min {:d} s".format(minutes, seconds)
    hours, minutes = divmod(minutes, 60)
    return "{:d} h {:d} min".format(hours, minutes)


def parse_address(text):
    """``"host:port"`` (``[v6]:port`` too) -> ``(host, port)``; ValueError with one line if it is not one."""
    text = text.strip()
    host, sep, port = text.rpartition(":")
    host = host.strip("[]")
    if not sep or not host:
        raise ValueError("Give the worker's address as HOST:PORT, for example 192.168.1.20:7860")
    try:
        number = int(port)
    except ValueError:
        raise ValueError("The worker's port must be a number: {:s}".format(text)) from None
    if not 0 < number < 65536:
        raise ValueError("The worker's port must be 1-65535: {:s}".format(text))
    return host, number


def on_this_machine(host):
    """Whether ``host`` names this machine (a worker reached over loopback: an SSH tunnel's near end)."""
    name = host.strip("[]").lower().rstrip(".")
    if name == "localhost" or name.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(name).is_loopback
    except ValueError:
        return False


@dataclass(frozen=True)
class LocalWorker:
    """A worker started here: ``python -m backend serve *args`` in ``cwd`` (see WorkerClient.start)."""

    python: str
    args: tuple = ()
    cwd: str = None
    env: tuple = ()  # extra environment variables, as (name, value) pairs
    log_path: str = None

    def describe(self):
        return "local worker ({:s})".format(self.python)


@dataclass(frozen=True)
class RemoteWorker:
    """A worker serving TCP (``serve --listen``). Off loopback (or with a ``fingerprint``) it is
    TLS, its certificate pinned by ``fingerprint``, and files go over the connection; a plain
    loopback worker must see the same paths as Blender."""

    host: str
    port: int
    token: str = None
    fingerprint: str = ""  # SHA-256 of the worker's certificate, as it printed it

    def describe(self):
        return "worker at " + protocol.wire.address_text(self.host, self.port)


@dataclass
class JobError:
    """Why a job failed: the worker's code, one line for the artist and a hint (may be empty)."""

    code: str
    message: str
    hint: str = ""

    def text(self):
        """One line: the message, then the hint."""
        if self.hint and self.hint not in self.message:
            return one_line("{:s} ({:s})".format(self.message, self.hint))
        return one_line(self.message)


@dataclass
class Job:
    """One job as the add-on tracks it."""

    key: str  # ours, known at once
    spec: dict
    task: str = "generate"  # or a segmentation: protocol.SEGMENT_TASKS
    job_dir: str = ""
    meta: dict = field(default_factory=dict)  # the caller's own data (scene, import settings...)
    id: str = ""  # the worker's, once queued
    status: str = "submitting"
    position: int = 0  # jobs ahead of it while queued
    others_ahead: int = 0  # of those, other artists' jobs (a shared worker)
    phase: str = ""
    segment: int = 0
    segments: int = 0
    step: int = 0
    steps: int = 0
    frames: int = 0  # frames the job will write (from "started")
    frames_ready: int = 0
    preview: str = ""  # the latest frame written
    first_frame: str = ""
    manifest: str = ""
    record: str = ""  # a segmentation's segment.json, once done
    frame: int = 0  # frames finished in a segmentation's (or a generation's matte's) stage
    stage: str = ""  # that stage: "segment" or "write"
    error: JobError = None
    warnings: list = field(default_factory=list)
    noise_only: bool = False
    submitted_at: float = 0.0
    started_at: float = None
    finished_at: float = None
    eta_s: float = None  # seconds left, estimated from the step timing
    cancel_requested: bool = False
    sent: bool = False  # the submit has gone to the worker
    transfer: tuple = ()  # (phase, bytes, total) of the latest upload or download to a remote worker
    _step_log: list = field(default_factory=list, repr=False)  # (segment, step, time) of sample steps
    _segment_tail: list = field(default_factory=list, repr=False)  # seconds from a segment's last step to its frames
    _decoded_segment: int = -1  # the latest segment whose frames have arrived

    @property
    def active(self):
        return self.status in ACTIVE

    @property
    def finished(self):
        return self.status in FINISHED

    def phase_text(self):
        """What the job is doing, in words: "Generating: segment 1/2, step 3/8"."""
        if self.transfer and self.active and self.transfer[1] < self.transfer[2]:
            phase, done, total = self.transfer
            return "{:s}: {:.1f}/{:.1f} MB".format(TRANSFER_NAMES[phase], done / 1e6, total / 1e6)
        if self.status == "submitting":
            return "Starting the worker" if not self.id else "Submitting"
        if self.status == "queued":
            if self.others_ahead:
                return "Queued ({:d} ahead, {:d} of other artists)".format(self.position, self.others_ahead)
            return "Queued ({:d} ahead)".format(self.position) if self.position else "Queued"
        if self.status == "done":
            return "Done: {:d} frames".format(self.frames_ready or self.frames)
        if self.status == "cancelled":
            return "Cancelled"
        if self.status == "failed":
            return "Failed: " + (self.error.text() if self.error else "unknown error")
        return progress_text(self.phase, self.segment, self.segments, self.step, self.steps, self.stage, self.frame,
                             self.frames)

    def progress(self):
        """Fraction done (0..1) from the segments and steps, for a progress bar."""
        if self.status == "done":
            return 1.0
        if self.task != "generate" or self.phase == "matte":  # segmenting, then writing, frame by frame
            within = min(self.frame, self.frames) / self.frames if self.frames else 0.0
            within = {"segment": 0.9 * within, "write": 0.9 + 0.1 * within}.get(self.stage, 0.0)
            return within if self.task != "generate" else 0.9 + 0.1 * within
        if not self.segments:
            return 0.0
        done_segments = max(0, self.segment - 1)
        within = 0.0
        if self.phase == "sample" and self.steps:
            within = 0.9 * self.step / self.steps
        elif self.phase == "decode":
            within = 0.9
        return min(1.0, (done_segments + within) / self.segments)

    @property
    def resumable(self):
        """A generation that ended with its worker (killed, connection lost) or on a folder it could not write,
        and whose folder it had started."""
        return (self.task == "generate" and self.status == "failed" and self.error is not None
                and self.error.code in RESUMABLE_ERRORS
                and os.path.isfile(os.path.join(self.job_dir, protocol.MANIFEST_NAME)))

    def eta_text(self):
        return format_duration(self.eta_s)

    # -- what the worker said ---------------------------------------------------------------------
    # Each takes the event's record (`protocol.events`); a message dict is read into one first.
    def on_started(self, message, now):
        """The worker's ``started`` event, at clock time ``now``."""
        event = as_event(message)
        self.status = "running"
        self.started_at = self.started_at or now
        self.frames = event.frames
        self.segments = event.segments
        self.warnings = list(event.warnings)
        self.noise_only = event.noise_only

    def on_progress(self, message, now):
        """A ``progress`` event: phase, segment i/n and step j/m (a generation), or frame i/n (a segmentation);
        or the bytes of an upload or download to a remote worker (phase ``upload``, ``download``)."""
        event = as_event(message)
        if event.phase in TRANSFER_NAMES:
            total = event.total or 0
            self.transfer = (event.phase, min(event.bytes or 0, total), total)
            return
        if self.status != "running":
            self.status = "running"
            self.started_at = self.started_at or now
        self.phase = event.phase
        if self.task != "generate" or self.phase == "matte":
            self.stage = event.stage or self.phase
            self.frame = event.frame or 0
            self.frames = event.frames or self.frames
            self.eta_s = None  # not worked out for segmentation
            return
        self.segment = event.segment or 0
        self.segments = event.segments or self.segments
        if self.phase == "sample":
            self.step = event.step or 0
            self.steps = event.steps or 0
            self._step_log.append((self.segment, self.step, now))
            del self._step_log[:-64]
        self._update_eta()

    def on_frame(self, message, now):
        """A ``frame_ready`` event: the newest preview frame; the first of a segment ends its decode."""
        event = as_event(message)
        self.preview = event.path
        if event.index == 0 or not self.first_frame:
            self.first_frame = self.first_frame or self.preview
        self.frames_ready += 1
        last_step = self._step_log[-1] if self._step_log else None
        if self._decoded_segment != self.segment:
            self._decoded_segment = self.segment
            if last_step is not None and last_step[0] == self.segment:
                self._segment_tail.append(now - last_step[2])
            self._update_eta()

    # -- ETA -------------------------------------------------------------------------------------
    def _seconds_per_step(self):
        """Mean time of a denoising step, from consecutive steps of one segment (None until two)."""
        intervals = [
            b[2] - a[2] for a, b in zip(self._step_log, self._step_log[1:])
            if a[0] == b[0] and b[1] == a[1] + 1
        ]
        recent = intervals[-20:]
        return sum(recent) / len(recent) if recent else None

    def _update_eta(self):
        per_step = self._seconds_per_step()
        if per_step is None or not self.steps or not self.segments:
            self.eta_s = None
            return
        left_steps = max(0, self.steps - self.step) + max(0, self.segments - self.segment) * self.steps
        tail = sum(self._segment_tail) / len(self._segment_tail) if self._segment_tail else per_step
        this_one = self.phase in ("sample", "decode") and self._decoded_segment != self.segment
        segments_to_decode = max(0, self.segments - self.segment) + (1 if this_one else 0)
        self.eta_s = left_steps * per_step + segments_to_decode * tail


@dataclass
class Change:
    """A job whose state changed: ``kind`` is queued, started, progress, frame, done, cancelled or failed."""

    job: Job
    kind: str
