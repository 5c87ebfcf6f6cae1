"""Input checks: what the footage, masks and reference say about the take before any GPU time.

The backend measures (`python -m backend check-inputs`, and `generate` by itself); the add-on shows
the checklist and turns each check's frames into timeline markers. A job's manifest keeps the report
it was generated with under `input_checks`, so the warning stays with the take.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Literal

from .events import Event, event_type
from .records import ProtocolError, Record

VERDICTS = ("ok", "warn", "fail")  # in rising order of severity
Verdict = Literal["ok", "warn", "fail"]
CHECK_MARKER_PREFIX = "check: "  # a timeline marker named "check: cut" points at a frame a check names


@dataclass(frozen=True)
class InputCheck(Record):
    """One named check of the inputs, and what it means for the take.

    `frames` are job frame indices (0 = the first frame the job generates); `identity` is 1..6 when
    the check is about one identity of the masks.
    """

    WHAT = "input check"
    name: str  # "cut", "camera", "blur", "subject_size", "subject_missing", "overlap", "identities", ...
    verdict: Verdict
    message: str  # one sentence: what it means for the take and what to do
    value: float | None = None  # the number the verdict rests on
    unit: str = ""
    frames: list[int] = field(default_factory=list)
    identity: int | None = None

    def check(self) -> None:
        if any(frame < 0 for frame in self.frames):
            raise ProtocolError(f"{self.WHAT} {self.name}: frames must not be negative")


@dataclass(frozen=True)
class InputCheckReport(Record):
    """Every check of one job's inputs, as `check-inputs --json` prints and the manifest keeps."""

    WHAT = "input checks"
    checks: list[InputCheck]
    seconds: float = 0.0  # how long the checks took
    strict: bool = False  # warnings were fatal (`--strict`)
    # Per job frame, the driving clip's frame it shows: how the add-on turns a check's job frames
    # into scene frames (through its export's frame mapping) for the timeline markers.
    source_frames: list[int] = field(default_factory=list)

    @property
    def verdict(self) -> str:
        """The worst verdict of all checks ("ok" when there is none)."""
        return max((c.verdict for c in self.checks), key=VERDICTS.index, default="ok")

    def failed(self, strict: bool | None = None) -> list[InputCheck]:
        """The checks that stop a job: "fail", and "warn" too when strict."""
        strict = self.strict if strict is None else strict
        stopping = ("warn", "fail") if strict else ("fail",)
        return [c for c in self.checks if c.verdict in stopping]


# The worker's request to check a job's inputs without running it (so Blender never blocks on the
# checks), and its answer. Message names, registered in protocol.REQUESTS and protocol.EVENTS.
CHECK_INPUTS_REQUEST = "check_inputs"
INPUT_CHECKS_EVENT = "input_checks"


@dataclass(frozen=True)
class CheckInputsRequest(Record):
    """check_inputs {job: JobSpec dict}: run the input checks of a job; answered by `input_checks` (or
    an `error` with code bad_input when an input cannot be read at all)."""

    WHAT = "check_inputs request"
    job: dict[str, Any]
    request_id: str | None = None


@event_type
@dataclass(frozen=True, kw_only=True)
class InputChecksEvent(Event):
    """input_checks {report}: the checks of a `check_inputs` request, echoing its request_id."""

    TYPE = INPUT_CHECKS_EVENT
    WHAT = "input_checks event"
    report: InputCheckReport
