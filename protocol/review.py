"""The review of takes: scores measured by the worker, the artist's verdict, and the recipe.

A take is one finished generation job of a shot. Two records live in its job folder:
- the manifest's `review` object (`ManifestReview`): the scores the worker measured after the take
  (`python -m backend score JOB_DIR` recomputes them for any job folder);
- `review.json` (`TakeReview`) beside the manifest: the take's name, status, rating and frame notes,
  and its recipe, so a second artist opening the folder or the .blend sees the same review. The
  backend writes it once when a take finishes; afterwards the add-on rewrites it (atomically) when the
  artist changes status, rating or notes.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .records import ProtocolError, Record

REVIEW_NAME = "review.json"
REVIEW_FORMAT = "scail2-review/1"
TAKE_STATUSES = ("new", "approved", "rejected", "on_hold")
TakeStatus = Literal["new", "approved", "rejected", "on_hold"]
MAX_RATING = 5
NOTE_MARKER_PREFIX = "note: "  # a timeline marker carrying a frame note


@dataclass(frozen=True)
class Score(Record):
    """One measured score of a take: a take-level value and one value per frame.

    `value` and `per_frame` are in [0, 1], higher is better; `per_frame[k]` is None where the score
    does not apply to job frame k (no mask, first frame of a flow pair).
    """

    WHAT = "score"
    name: str  # "motion", "temporal", "identity", "background", "faces"
    value: float | None
    what: str  # one line: what it measures
    limits: str  # one line: what it cannot see
    per_frame: list[float | None] = field(default_factory=list)
    details: dict[str, Any] = field(default_factory=dict)  # raw figures behind the value, for the report


@dataclass(frozen=True)
class Flag(Record):
    """A frame where a score falls far below the take's own median."""

    WHAT = "flag"
    frame: int
    score: str
    reason: str


@dataclass(frozen=True)
class TakeScores(Record):
    WHAT = "take scores"
    scores: list[Score]
    flags: list[Flag] = field(default_factory=list)
    seconds: float = 0.0
    scorer: str = ""  # version of the scoring code, so old scores can be told apart

    def score(self, name: str) -> Score | None:
        return next((s for s in self.scores if s.name == name), None)


@dataclass(frozen=True)
class ManifestReview(Record):
    """The manifest's `review` object."""

    WHAT = "manifest review"
    scores: TakeScores | None = None


@dataclass(frozen=True)
class Note(Record):
    """A note on one frame of a take (shown as a timeline marker)."""

    WHAT = "note"
    frame: int  # job frame index
    text: str
    author: str = ""
    time: str = ""  # ISO 8601, UTC


@dataclass(frozen=True)
class RecipeFile(Record):
    """A file a take was made from, with its SHA-256 when it was made."""

    WHAT = "recipe file"
    role: str  # "driving", "reference", "driving_mask", "extra_reference", "lora", "transformer", ...
    path: str
    sha256: str | None = None


@dataclass(frozen=True)
class Recipe(Record):
    """Everything needed to make the take again: `generate --recipe review.json`."""

    WHAT = "recipe"
    job: dict[str, Any]  # the JobSpec as a dict, with the seed the take used
    seed: int
    inputs: list[RecipeFile] = field(default_factory=list)
    model: list[RecipeFile] = field(default_factory=list)
    versions: dict[str, str] = field(default_factory=dict)  # backend, torch, diffusers, ...


@dataclass(frozen=True)
class TakeReview(Record):
    """`review.json`: one take's review and recipe."""

    WHAT = "review"
    format: str
    job_id: str
    shot: str = ""  # the take's shot: its inputs fingerprint and frame range
    version: int = 0  # v001 = 1; 0 until the add-on numbers it within its shot
    label: str = ""
    status: TakeStatus = "new"
    rating: int = 0  # 0 = not rated, 1..MAX_RATING
    notes: list[Note] = field(default_factory=list)
    recipe: Recipe | None = None
    derived_from: str = ""  # a take redone on a changed input says which take it came from

    def check(self) -> None:
        if self.format != REVIEW_FORMAT:
            raise ProtocolError(f"{self.WHAT}: format {self.format!r} is not {REVIEW_FORMAT!r}")
        if not 0 <= self.rating <= MAX_RATING:
            raise ProtocolError(f"{self.WHAT}: rating must be 0 to {MAX_RATING}, got {self.rating}")
        if self.version < 0:
            raise ProtocolError(f"{self.WHAT}: version must not be negative, got {self.version}")

    @property
    def version_label(self) -> str:
        return f"v{self.version:03d}" if self.version else "v---"
