"""A generation job folder's `state.json`: how far the job is, written as it goes, read to resume it.

The backend writes it after every segment (`backend/pipeline/generate.py`); the job folder check,
the worker's job list and the add-on's queue read it back with `read_record(path, JobState)`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from .manifest import JobStatus
from .records import ProtocolError, Record
from .seeds import is_seed

STATE_NAME = "state.json"


@dataclass(frozen=True)
class JobState(Record):
    WHAT = "job state"
    status: JobStatus = "new"
    completed_segments: int = 0  # segments whose frames are all written
    seed: int | None = None  # fixed when the job first starts, so a resume makes the same noise
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage, over every run

    def check(self) -> None:
        if self.completed_segments < 0:
            raise ProtocolError(f"is damaged (completed_segments {self.completed_segments})")
        if self.seed is not None and not is_seed(self.seed):
            raise ProtocolError(f"holds the seed {str(self.seed)[:40]}, which is not 0 to 2**64 - 1")
