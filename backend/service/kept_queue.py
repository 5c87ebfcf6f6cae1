"""A served worker's queue kept on disk, so that a restart (a driver update, a reboot) loses no artist's job.

A worker serving TCP (`serve --listen`) keeps `.queue.json` under its jobs root: the running job and
the queued ones, in the order they start, each with its id, owner, task, settings, folder and the
uploads it reads. The file is written whole, by rename, whenever the queue changes, and no more once
the worker is stopping: what it says then is the queue as the worker was asked to stop. At the next
start those jobs are queued again under the same ids, the one that was running first (it resumes from
its last finished segment), so an add-on that reconnects finds its jobs still listed and follows them
on. A job whose folder is finished meanwhile, or whose inputs are gone, is left out with one log line.
A worker on stdin/stdout (the add-on's own) keeps nothing: its jobs end with the Blender that started it.
"""

from __future__ import annotations

import threading
from pathlib import Path
from typing import TYPE_CHECKING

import protocol

from ..pipeline.durable import write_json_atomic
from ..pipeline.job_folder import FolderBusy, FolderClaim, JobDirectoryError, live_holder
from .jobs import Job, ProtocolFailure, folder_summary, is_finished, log, read_json

if TYPE_CHECKING:
    from .blobs import BlobStore
    from .quotas import FairQueue

QUEUE_FILE = ".queue.json"  # under the jobs root (a dot name: never a remote client's job folder)
FORMAT = 1


class JobsRootBusy(ValueError):
    """Another served worker holds the jobs root, or it cannot be made or written; one line."""


def claim_jobs_root(jobs_root: Path) -> FolderClaim:
    """The jobs root's lock, held for as long as the worker serves: a second worker started on it would queue
    the same kept jobs again and run them twice (and share its job owners and uploads' bookkeeping)."""
    advice = "give --jobs-root a folder this worker can write"
    try:
        jobs_root.mkdir(parents=True, exist_ok=True)
    except FileExistsError:
        raise JobsRootBusy(f"the jobs root {jobs_root} is a file, not a folder; {advice}") from None
    except OSError as exc:
        raise JobsRootBusy(f"cannot make the jobs root {jobs_root}: {exc.strerror or exc}; {advice}") from None
    try:
        return FolderClaim(jobs_root).claim()
    except FolderBusy:
        holder = live_holder(jobs_root)
        raise JobsRootBusy(f"another worker{f' (PID {holder})' if holder else ''} serves jobs from {jobs_root}: "
                           "stop it, or give this one a --jobs-root of its own") from None
    except JobDirectoryError as exc:  # made, but its lock cannot be written (read-only, full)
        raise JobsRootBusy(f"cannot use the jobs root {jobs_root} ({exc}); {advice}") from None


def save_queue(path: Path, jobs: list[Job]) -> None:
    """Write the active jobs (running first, then in the order they start) to `path`, whole."""
    entries = [{"id": job.id, "task": job.task, "spec": job.spec, "job_dir": str(job.job_dir), "owner": job.owner,
                "blobs": list(job.blobs)} for job in jobs]
    write_json_atomic(path, {"format": FORMAT, "jobs": entries})


def load_queue(path: Path) -> list[Job]:
    """The jobs `save_queue` wrote to `path`, in order; none when there is no file. A damaged file or
    entry is one log line and left out (the next change to the queue writes the file anew)."""
    if not path.exists():
        return []
    try:
        data = protocol.read_json_file(path, "the kept queue")
    except protocol.ProtocolError as exc:
        log(f"{exc}: no job of before the restart is queued again")
        return []
    if not isinstance(data, dict) or data.get("format") != FORMAT or not isinstance(data.get("jobs"), list):
        log(f"{path} is not a queue this worker wrote: no job of before the restart is queued again")
        return []
    jobs = []
    for entry in data["jobs"]:
        try:
            jobs.append(Job(str(entry["id"]), dict(entry["spec"]), Path(entry["job_dir"]), task=str(entry["task"]),
                            blobs=tuple(str(sha) for sha in entry["blobs"]), owner=str(entry["owner"])))
        except (KeyError, TypeError, ValueError):
            log(f"{path}: a damaged entry is left out: {str(entry)[:120]}")
    return jobs


class QueueKeeping:
    """The kept queue of `worker.Worker` (a base class, like `sharing.Sharing`); `_queue_file` None keeps none."""

    _queue_file: Path | None
    _cond: threading.Condition
    _queue: FairQueue
    _session_dirs: set[Path]
    blobs: BlobStore
    stopping: threading.Event

    def _save_queue(self) -> None:
        """Write the queue as it stands (hold _cond). A job being cancelled is left out; once the worker is
        stopping nothing is written, so the running job stays in the file and runs again at the next start."""
        if self._queue_file is None or self.stopping.is_set():
            return
        try:
            save_queue(self._queue_file, [job for job in self._active_jobs() if not job.cancel.is_set()])
        except OSError as exc:  # a full disk costs the queue's memory of a restart, not the job
            log(f"cannot keep the queue in {self._queue_file}: {exc.strerror or exc}")

    def _restore_queue(self) -> None:
        """Queue again the jobs of before a restart (at start, before any connection is served)."""
        restored = []
        for job in load_queue(self._queue_file):
            reason = self._not_restored_because(job, restored)
            if reason:
                log(f"job {job.id} of before the restart is not queued again: {reason}")
                continue
            with self._cond:
                self._queue.append(job)
                self._claimed(job)
                self.blobs.hold(job.blobs)
                self._session_dirs.add(job.job_dir)
            restored.append(job)
        if restored:
            log(f"{len(restored)} jobs of before the restart queued again, in their order (the one that was "
                "running resumes from its last finished segment)")
        with self._cond:
            self._save_queue()

    def _not_restored_because(self, job: Job, restored: list[Job]) -> str | None:
        if any(job.id == other.id or job.job_dir == other.job_dir for other in restored):
            return "named twice"
        if job.task == "generate":
            finished = is_finished(folder_summary(job.job_dir))
        else:
            finished = (read_json(job.job_dir / protocol.SEGMENT_RECORD) or {}).get("status") == "done"
        if finished:
            return f"{job.job_dir} is finished"
        try:
            if job.task == "generate":
                self._check_spec(job.spec)
                self._check_folder(job)
            else:
                self._check_segment_spec({"task": job.task, "job": job.spec})
        except ProtocolFailure as exc:
            return str(exc)
        return None
