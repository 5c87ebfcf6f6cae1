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
