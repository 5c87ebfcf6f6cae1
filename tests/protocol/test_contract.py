"""The contract's records: every event type, the manifest, the job state, the error codes, the handshake.

Each event type round-trips through its record and the wire; a field the record does not know is
refused when written and when read; a new event type is one registered class.
"""

from __future__ import annotations

import dataclasses
import json
import typing
from dataclasses import dataclass
from typing import Any, Literal

import pytest

import protocol
from protocol import ProtocolError, errors
from protocol.events import EVENT_TYPES, Event, event_type

# What the worker and the client send today, one type each: a test fails when one is added or removed
# without its record.
EXPECTED_EVENT_TYPES = {"capabilities", "queued", "started", "progress", "frame_ready", "done", "error", "cancelled",
                        "jobs", "ok", "blob", "files", "file_data", "input_checks"}


def sample(annotation: Any, name: str) -> Any:
    """A value of `annotation` (every optional field set, so nothing relies on a default)."""
    origin, args = typing.get_origin(annotation), typing.get_args(annotation)
    if annotation is Any:
        return 1.25 if name == "source_time" else {"any": [1, "two"]}
    if origin in (typing.Union, __import__("types").UnionType):
        return sample(next(a for a in args if a is not type(None)), name)
    if origin is Literal:
        return args[0]
    if origin is list:
        return [sample(args[0], name)]
    if origin is dict:
        return {"key": sample(args[1], name)}
    if isinstance(annotation, type) and issubclass(annotation, protocol.Record):
        return filled(annotation)
    if name == "code":
        return errors.BAD_INPUT
    return {str: f"{name}-text", int: 3, float: 2.5, bool: True}[annotation]


def filled(cls: type) -> Any:
    hints = typing.get_type_hints(cls)
    values = {f.name: sample(hints[f.name], f.name) for f in dataclasses.fields(cls) if f.init}
    return cls(**values)


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_every_event_round_trips_through_its_record_and_the_wire(kind):
    event = filled(EVENT_TYPES[kind])
    line = protocol.encode_event(event)
    assert line.endswith("\n") and "\n" not in line[:-1]
    message = protocol.decode_message(line)
    assert message["type"] == kind and message["v"] == protocol.PROTOCOL_VERSION
    assert protocol.decode_event(message) == event
    assert protocol.decode_event(protocol.as_message(event)) == event


def test_the_registry_holds_exactly_the_event_types_of_the_protocol():
    assert set(EVENT_TYPES) == EXPECTED_EVENT_TYPES
    assert all(cls.TYPE == kind and issubclass(cls, Event) for kind, cls in EVENT_TYPES.items())


@pytest.mark.parametrize("kind", sorted(EVENT_TYPES))
def test_a_field_the_record_does_not_know_is_refused_when_written_and_when_read(kind):
    fields = protocol.event_fields(filled(EVENT_TYPES[kind]))
    with pytest.raises(ProtocolError, match="unknown field surprise"):
        protocol.encode_message(kind, **fields, surprise=1)
    line = json.dumps({"v": protocol.PROTOCOL_VERSION, "type": kind, **fields, "surprise": 1})
    with pytest.raises(ProtocolError, match="unknown field surprise"):
        protocol.decode_message(line)


def test_a_wrong_type_is_refused_by_name():
    with pytest.raises(ProtocolError, match=r"progress event.step: expected int \| None, got 'two'"):
        protocol.encode_message("progress", job="a", phase="sample", step="two")


def test_unset_optional_fields_stay_off_the_wire():
    line = protocol.encode_message("progress", job="a", phase="encode", segment=0, segments=2)
    assert json.loads(line) == {"v": 1, "type": "progress", "job": "a", "phase": "encode", "segment": 0,
                                "segments": 2}


def test_another_branch_adds_an_event_type_as_one_class():
    @event_type
    @dataclass(frozen=True, kw_only=True)
    class Scores(Event):
        TYPE = "test_scores"
        WHAT = "test_scores event"
        job: str
        scores: list[protocol.Score]

    try:
        score = protocol.Score(name="motion", value=0.5, what="how much moves", limits="no faces")
        line = protocol.encode_message("test_scores", job="j1", scores=[score.to_dict()])
        assert protocol.decode_event(protocol.decode_message(line)) == Scores(job="j1", scores=[score])
        with pytest.raises(TypeError, match="already registered"):
            event_type(Scores)
    finally:
        del EVENT_TYPES["test_scores"]


# -- error codes ----------------------------------------------------------------------------------


def test_every_error_code_is_declared_once_with_its_meaning():
    assert all(entry.code == code and entry.meaning for code, entry in errors.ERRORS.items())
    for code in ("bad_request", "bad_input", "out_of_memory", "output_error", "job_failed", "worker_exited",
                 "connection_lost", "transfer_failed", "upload_failed", "protocol_mismatch"):
        assert code in errors.ERRORS
    assert set(errors.RESUMABLE) == {"output_error", "worker_exited", "connection_lost"}
    assert errors.is_input_error("bad_input") and not errors.is_input_error("job_failed")


def test_an_undeclared_error_code_is_refused():
    with pytest.raises(ProtocolError, match="unknown error code 'made_up'"):
        protocol.error_event("made_up", "something")
    with pytest.raises(ProtocolError, match="unknown error code"):
        protocol.decode_message('{"v": 1, "type": "error", "code": "made_up", "message": "x"}')


# -- the handshake --------------------------------------------------------------------------------


@pytest.mark.parametrize("line, version", [
    ('{"v": 1, "type": "capabilities", "protocol": 1}', None),
    ('{"v": 2, "type": "capabilities", "protocol": 2}', 2),
    ('{"v": 1, "type": "capabilities", "protocol": 3}', 3),
    ('{"v": "one", "type": "ok"}', -1),
    ('a stray print', None),
    ('{"type": "ok"}', None),
])
def test_version_mismatch_reads_the_version_of_a_workers_line(line, version):
    assert protocol.version_mismatch(line) == version


# -- the manifest and the job state ---------------------------------------------------------------


def test_the_manifest_round_trips_with_its_input_checks_and_review():
    manifest = filled(protocol.Manifest)
    manifest = dataclasses.replace(manifest, format=protocol.MANIFEST_FORMAT, status="done")
    again = protocol.Manifest.from_dict(json.loads(json.dumps(manifest.to_dict())))
    assert again == manifest
    assert isinstance(again.input_checks, protocol.InputCheckReport) and isinstance(again.review,
                                                                                   protocol.ManifestReview)


@pytest.mark.parametrize("change, message", [
    ({"format": "something/2"}, "not a SCAIL-2 job manifest"),
    ({"frames": []}, "lists no frames"),
    ({"frames": [{"file": "frames/frame_000000.png", "source_time": "soon"}]}, "not a number"),
    ({"model_fps": 0}, "must be positive"),
    ({"status": "finished"}, "manifest.status: expected"),
    ({"extra": 1}, "unknown field extra"),
])
def test_a_manifest_the_record_refuses_is_one_line(change, message):
    data = {"format": protocol.MANIFEST_FORMAT, "frames": [{"file": "frames/frame_000000.png", "source_time": 0.0}]}
    with pytest.raises(ProtocolError, match=message):
        protocol.Manifest.from_dict(data | change)


def test_the_job_state_checks_its_seed_and_segments(tmp_path):
    state = protocol.JobState(status="running", completed_segments=1, seed=2**63, timings={"sample": 1.5})
    assert protocol.JobState.from_dict(json.loads(json.dumps(state.to_dict()))) == state
    with pytest.raises(ProtocolError, match="holds the seed 1180591620717411303424"):
        protocol.JobState.from_dict({"seed": 2**70})
    with pytest.raises(ProtocolError, match="completed_segments -1"):
        protocol.JobState.from_dict({"completed_segments": -1})
    path = tmp_path / protocol.STATE_NAME
    path.write_bytes(b"\xff\xfe\x00garbage")
    with pytest.raises(ProtocolError, match="not UTF-8"):
        protocol.read_record(path, protocol.JobState)


# -- rules written once ---------------------------------------------------------------------------


def test_the_seed_rule():
    picked = {protocol.pick_seed() for _ in range(200)}
    assert all(0 <= seed < protocol.PICKED_SEED_LIMIT <= protocol.SEED_LIMIT for seed in picked)
    assert len(picked) > 150  # drawn, not fixed
    assert protocol.is_seed(2**64 - 1) and not protocol.is_seed(2**64) and not protocol.is_seed(-1)
    assert not protocol.is_seed(True)
    protocol.JobSpec(driving="a.mp4", reference="b.png", seed=protocol.PICK_SEED).validate()


def test_a_raised_pixel_limit_is_the_same_job():
    recorded = protocol.JobSpec(driving="a.mp4", reference="b.png", seed=3).to_dict()
    raised = dict(recorded, max_input_pixels=protocol.MAX_INPUT_PIXELS_LIMIT)
    assert protocol.same_job(recorded, raised)
    assert not protocol.same_job(recorded, dict(recorded, seed=4))


def test_the_segmentation_record_round_trips_and_refuses_what_it_does_not_know():
    record = filled(protocol.SegmentationRecord)
    assert protocol.SegmentationRecord.from_dict(json.loads(json.dumps(record.to_dict()))) == record
    with pytest.raises(ProtocolError, match="unknown field extra"):
        protocol.SegmentationRecord.from_dict(record.to_dict() | {"extra": 1})
