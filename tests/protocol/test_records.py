"""protocol.records and protocol.json_files: the typed-record base and the one JSON reader."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Literal

import pytest

import protocol
from protocol import ProtocolError, Record, read_json_file, read_record


@dataclass(frozen=True)
class Inner(Record):
    WHAT = "inner"
    name: str
    size: float = 0.0


@dataclass(frozen=True)
class Outer(Record):
    WHAT = "outer"
    job: str
    frame: int
    stage: Literal["sample", "decode"] = "sample"
    tags: list[str] = field(default_factory=list)
    parts: tuple[Inner, ...] = ()
    extra: dict[str, int] | None = None

    def check(self):
        if self.frame < 0:
            raise ProtocolError(f"{self.WHAT}: frame must not be negative, got {self.frame}")


def test_a_record_round_trips_with_nested_records():
    record = Outer(job="a", frame=3, stage="decode", tags=["x"], parts=(Inner("p", 2.5),), extra={"k": 1})
    data = json.loads(json.dumps(record.to_dict()))
    assert data["parts"] == [{"name": "p", "size": 2.5}]
    assert Outer.from_dict(data) == record


@pytest.mark.parametrize("data, message", [
    ({"job": "a"}, "outer: missing field 'frame'"),
    ({"job": "a", "frame": True}, "outer.frame: expected int, got True"),
    ({"job": "a", "frame": 1.0}, "outer.frame: expected int, got 1.0"),
    ({"job": "a", "frame": 1, "surprise": 1}, "outer: unknown field surprise"),
    ({"job": "a", "frame": 1, "stage": "encode"}, "outer.stage: expected one of 'sample', 'decode', got 'encode'"),
    ({"job": "a", "frame": 1, "parts": [{"name": "p", "size": float("inf")}]}, "inner.size: expected float, got inf"),
    ({"job": "a", "frame": 1, "parts": [{"name": 3}]}, "inner.name: expected str, got 3"),
    ({"job": "a", "frame": 1, "extra": {"k": "v"}}, "outer.extra: expected"),
    ({"job": "a", "frame": -1}, "outer: frame must not be negative, got -1"),
    ([1, 2], "outer: expected an object, got list"),
])
def test_a_record_refuses_in_one_line(data, message):
    with pytest.raises(ProtocolError) as caught:
        Outer.from_dict(data)
    assert str(caught.value).startswith(message) and "\n" not in str(caught.value)


@pytest.mark.parametrize("raw, why", [
    (b"\xff\xfe{\x00}\x00", "not a JSON file (not UTF-8 text)"),
    (b"", "empty"),
    (b'{"state": "done",', "damaged JSON"),
    (b"[" * 200_000, "JSON nested too deeply"),
])
def test_every_damaged_json_file_is_one_line(tmp_path, raw, why):
    path = tmp_path / "state.json"
    path.write_bytes(raw)
    with pytest.raises(ProtocolError) as caught:
        read_json_file(path, "job state")
    assert str(caught.value) == f"job state {path}: {why}" or str(caught.value).startswith(f"job state {path}: {why}")


def test_a_missing_file_and_a_record_of_the_wrong_shape(tmp_path):
    with pytest.raises(ProtocolError, match="no such file"):
        read_json_file(tmp_path / "absent.json")
    path = tmp_path / "outer.json"
    path.write_text(json.dumps({"job": "a"}))
    with pytest.raises(ProtocolError, match=f"outer {path}: outer: missing field 'frame'"):
        read_record(path, Outer)
    path.write_text(json.dumps({"job": "a", "frame": 2}))
    assert read_record(path, Outer) == Outer(job="a", frame=2)


def test_protocol_error_is_defined_once():
    from protocol import records
    assert protocol.ProtocolError is records.ProtocolError


def test_an_input_check_report_round_trips_and_knows_its_worst_verdict():
    report = protocol.InputCheckReport(checks=[
        protocol.InputCheck("cut", "fail", "a cut at frame 4 breaks the motion: split the job there", 1.0, "", [4]),
        protocol.InputCheck("blur", "warn", "frames 7-9 are blurred", 0.2, "x median", [7, 8, 9]),
    ], seconds=0.5)
    again = protocol.InputCheckReport.from_dict(json.loads(json.dumps(report.to_dict())))
    assert again == report and again.verdict == "fail"
    assert [c.name for c in again.failed()] == ["cut"] and [c.name for c in again.failed(strict=True)] == ["cut", "blur"]
    assert protocol.InputCheckReport(checks=[]).verdict == "ok"
    with pytest.raises(ProtocolError, match="expected one of 'ok', 'warn', 'fail'"):
        protocol.InputCheck.from_dict({"name": "cut", "verdict": "bad", "message": "m"})


def test_a_take_review_round_trips_and_refuses_a_bad_rating():
    review = protocol.TakeReview(
        format=protocol.REVIEW_FORMAT, job_id="job-1", shot="abc:1-8", version=2, status="approved", rating=4,
        notes=[protocol.Note(frame=3, text="hand pops")],
        recipe=protocol.Recipe(job={"driving": "a.mp4"}, seed=7,
                               inputs=[protocol.RecipeFile("driving", "a.mp4", "0" * 64)]))
    again = protocol.TakeReview.from_dict(json.loads(json.dumps(review.to_dict())))
    assert again == review and again.version_label == "v002"
    with pytest.raises(ProtocolError, match="rating must be 0 to 5"):
        protocol.TakeReview.from_dict(dict(review.to_dict(), rating=9))
    with pytest.raises(ProtocolError, match="status: expected one of"):
        protocol.TakeReview.from_dict(dict(review.to_dict(), status="maybe"))
