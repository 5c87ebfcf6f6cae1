"""The worker's queue when several artists share it: a fair order between them and a cap on each.

Jobs run one at a time. Instead of submission order the queue takes turns between owners
(round robin): after a job of A has started, the next job is the oldest one of the owner after A,
and so on, so one artist's ten queued jobs never hold back another's first one. Within one owner
the order stays that of submission. `FairQueue` iterates in the order jobs will start (which is
what `position` in `queued` and `list_jobs` reports) and `popleft` takes the next one. With one
owner (a worker without named tokens) this is plain submission order.
"""

from __future__ import annotations

from collections.abc import Iterator

from .jobs import Job

DEFAULT_MAX_QUEUED = 20  # per artist: a night's batch of shots, not the whole studio's queue


class FairQueue:
    """Queued jobs, iterated in the order they will start."""

    def __init__(self) -> None:
        self._jobs: list[Job] = []  # submission order
        self._turns: list[str] = []  # owners, the one whose turn is next first

    def append(self, job: Job) -> None:
        self._jobs.append(job)
        if job.owner not in self._turns:
            self._turns.append(job.owner)

    def remove(self, job: Job) -> None:
        self._jobs.remove(job)

    def clear(self) -> None:
        self._jobs.clear()

    def popleft(self) -> Job:
        job = next(iter(self))
        self._jobs.remove(job)
        # This owner has had its turn: it goes to the back of the line.
        self._turns.remove(job.owner)
        self._turns.append(job.owner)
        return job

    def queued_of(self, owner: str) -> int:
        return sum(1 for job in self._jobs if job.owner == owner)

    def __iter__(self) -> Iterator[Job]:
        by_owner: dict[str, list[Job]] = {}
        for job in self._jobs:
            by_owner.setdefault(job.owner, []).append(job)
        owners = [owner for owner in self._turns if owner in by_owner]
        depth = max((len(jobs) for jobs in by_owner.values()), default=0)
        for turn in range(depth):
            for owner in owners:
                if turn < len(by_owner[owner]):
                    yield by_owner[owner][turn]

    def __len__(self) -> int:
        return len(self._jobs)

    def __bool__(self) -> bool:
        return bool(self._jobs)
