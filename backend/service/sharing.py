"""What one identity may see and do on a shared worker: its own jobs and folders, within its quota.

`Sharing` is a part of `worker.Worker` (a base class, like `requests.Requests`). Every request
handler asks it before it answers: a job or a folder that is not the asker's gets the same
answer as one that does not exist (no reply tells another artist's job ids or folders apart
from made-up ones). An admin sees and cancels everything; a transfer-mode connection never sees
the jobs of local clients (their folders are not under the jobs root). The jobs of an artist whose
token is revoked stop: queued ones never start, a running one stops at its next step.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import protocol

from .identities import EVERYONE, FolderOwners, Identity, TokenBook
from .jobs import Job, ProtocolFailure, log

if TYPE_CHECKING:
    import threading

    from .blobs import BlobStore
    from .quotas import FairQueue
    from .serve import Output


def identity_of(output: Output) -> Identity:
    return getattr(output, "identity", EVERYONE)


class Sharing:
    """Ownership checks and quotas of `worker.Worker`."""

    book: TokenBook
    owners: FolderOwners
    jobs_root: Path
    max_queued: int
    blobs: BlobStore
    _cond: threading.Condition
    _queue: FairQueue
    _running: Job | None
    _job_owners: dict[str, str]

    def _sees_job(self, job: Job, output: Output) -> bool:
        if getattr(output, "mode", "paths") == "transfer" and not job.job_dir.is_relative_to(self.jobs_root):
            return False
        return identity_of(output).sees(job.owner)

    def _sees_folder(self, folder: Path, output: Output) -> bool:
        if getattr(output, "mode", "paths") == "transfer" and not folder.is_relative_to(self.jobs_root):
            return False
        return identity_of(output).sees(self.owners.owner_of(folder))

    def _owned(self, job: Job, output: Output) -> Job:
        """`job` with its owner: the asker; refused when the quota is used up or the folder is another's."""
        identity = identity_of(output)
        if self.owners.claimed(job.job_dir) not in (None, identity.name) and not identity.admin:
            # Another artist's folder: refused as a folder that cannot take the job, naming no one.
            raise ProtocolFailure("bad_input", f"{job.job_dir} holds another job: choose another folder")
        job.owner = identity.name
        if not identity.admin and self.max_queued > 0 and self._queue.queued_of(job.owner) >= self.max_queued:
            raise ProtocolFailure(protocol.QUOTA_EXCEEDED, f"you have {self.max_queued} jobs queued already, the "
                                  "most one artist may: wait for one to start or cancel one")
        return job

    def _claimed(self, job: Job) -> None:
        """Remember whose job and folder it is (hold _cond)."""
        self._job_owners[job.id] = job.owner
        if self.book.named:
            self.owners.claim(job.job_dir, job.owner)

    @staticmethod
    def _others_ahead(active: list[Job], job: Job) -> int:
        """Jobs of other owners that start (or run) before `job` (in `active`'s order)."""
        ahead = active[: active.index(job)] if job in active else active
        return sum(1 for other in ahead if other.owner != job.owner)

    def _stop_revoked(self) -> None:
        """Cancel the jobs of artists taken out of the tokens file: a queued one never starts, the running one
        stops at its next step. Revoking is how a studio takes the GPU from someone who may no longer use it
        (a new token for the same artist is `tokens add --replace`, which stops nothing)."""
        if not self.book.named:
            return
        with self._cond:
            owners = {job.owner for job in self._queue}
            owners |= {self._running.owner} if self._running is not None else set()
        revoked = self.book.revoked(owners)  # outside _cond: the book has a lock of its own
        if not revoked:
            return
        with self._cond:
            dropped = [job for job in self._queue if job.owner in revoked]
            for job in dropped:
                self._queue.remove(job)
                job.status = "cancelled"
                self.blobs.release(job.blobs)
            running = self._running if self._running is not None and self._running.owner in revoked else None
            stopped = running is not None and not running.cancel.is_set()
            if stopped:
                running.cancel.set()  # the job thread reports `cancelled` once it has stopped
                log(f"job {running.id} stops: {running.owner}'s token was revoked")
            if dropped or stopped:
                self._save_queue()
        for job in dropped:
            log(f"job {job.id} cancelled before it started: {job.owner}'s token was revoked")
            self._broadcast("cancelled", job=job.id, job_dir=str(job.job_dir), was="queued")
