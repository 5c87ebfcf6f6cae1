"""The shared protocol module: job specs and the line-delimited JSON messages."""

from __future__ import annotations

import json
import ssl

import pytest

import protocol
from protocol import JobSpec, ProtocolError


def test_protocol_module_uses_only_the_standard_library():
    import ast
    import sys

    from pathlib import Path

    imported = set()
    for path in sorted(Path(protocol.__file__).parent.glob("*.py")):  # every module of the package
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                imported.update(alias.name.split(".")[0] for alias in node.names)
            elif isinstance(node, ast.ImportFrom) and node.module and not node.level:
                imported.add(node.module.split(".")[0])
    assert imported <= set(sys.stdlib_module_names) | {"__future__"}


def test_job_spec_round_trips_through_json():
    spec = JobSpec(driving="a.mp4", reference="b.png", mode="replace", seed=7, loras=[{"path": "l.safetensors", "strength": 0.8}])
    again = JobSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec


@pytest.mark.parametrize(
    "changes, message",
    [
        ({"mode": "dance"}, "mode must be one of animate, replace"),
        ({"height": 500, "width": 896}, "multiples of 32"),
        ({"frame_start": 10, "frame_end": 10}, "holds no frame"),
        ({"frame_start": -1}, "starts at frame 0 or later, not -1"),
        ({"preset": "turbo"}, "preset must be one of"),
        ({"steps": 0}, "steps must be at least 1"),
        ({"height": "64"}, "height must be int, got str"),
        ({"seed": True}, "seed must be int, got bool"),
        ({"guidance": "high"}, "guidance must be float \\| None"),
        ({"extra_references": ["a.png", 3]}, "extra_references must be list\\[str\\]"),
    ],
)
def test_invalid_job_specs_give_one_clear_line(changes, message):
    data = JobSpec(driving="a.mp4", reference="b.png").to_dict() | changes
    with pytest.raises(ProtocolError, match=message) as info:
        JobSpec.from_dict(data)
    assert "\n" not in str(info.value)


def test_integers_are_accepted_where_floats_are_expected():
    assert JobSpec.from_dict({"driving": "a", "reference": "b", "guidance": 5, "model_fps": 16}).guidance == 5


def test_unknown_settings_are_refused_not_ignored():
    with pytest.raises(ProtocolError, match="unknown job settings: colour"):
        JobSpec.from_dict({"driving": "a", "reference": "b", "colour": "red"})


def test_messages_are_single_versioned_lines():
    line = protocol.encode_message("submit", job=JobSpec(driving="a", reference="b").to_dict())
    assert line.endswith("\n") and line.count("\n") == 1
    message = protocol.decode_message(line)
    assert message["v"] == protocol.PROTOCOL_VERSION and message["type"] == "submit"


@pytest.mark.parametrize(
    "line, message",
    [
        ("garbage", "not a JSON message"),
        ("[1, 2]", "JSON object with a 'type'"),
        ('{"v": 99, "type": "hello"}', "protocol version 99"),
        ('{"v": 1, "type": "explode"}', "unknown message type"),
    ],
)
def test_malformed_messages_raise_protocol_errors(line, message):
    with pytest.raises(ProtocolError, match=message):
        protocol.decode_message(line)


def test_error_events_keep_only_the_first_line():
    event = protocol.decode_message(
        protocol.error_event("out_of_memory", "CUDA out of memory.\nTraceback ...", hint="lower the resolution")
    )
    assert event["message"] == "CUDA out of memory."
    assert event["code"] == "out_of_memory" and event["hint"] == "lower the resolution"


# -- segmentation jobs ---------------------------------------------------------------------------


def test_segment_spec_round_trips_and_defaults_to_person():
    spec = protocol.SegmentSpec(task="masks", source="clip.mp4", subjects=[{"frame": 3, "box": [1, 2, 30, 40]}])
    again = protocol.SegmentSpec.from_dict(json.loads(json.dumps(spec.to_dict())))
    assert again == spec.validate()
    assert again.prompt == "person" and again.mode == "animate"


@pytest.mark.parametrize("changes, message", [
    ({"task": "paint"}, "task must be one of masks, matte"),
    ({"max_identities": 7}, "1 to 6 identities, 7 were asked for"),
    ({"pick": [0, 1, 2, 3, 4, 5, 6]}, "1 to 6 identities, 7 were asked for"),
    ({"pick": [True]}, "pick must be list[int] | None"),
    ({"task": "matte", "still": True}, "not of a still"),
    ({"prompt": " "}, "give a text prompt"),
    ({"subjects": [{"box": [5, 5, 1, 9]}]}, "x1 > x0"),
    ({"subjects": [{"points": [[1, 2]], "labels": [2]}]}, "labels are 1"),
    ({"subjects": [{"frame": -1, "points": [[1, 2]]}]}, "frame must be a frame index"),
    ({"subjects": [{"frame": 0}]}, "either a box or points"),
    ({"subjects": [{"box": [0, 0, 1, 1], "identity": 7}]}, "identity is 1 to 6"),
    ({"subjects": [{"box": [0, 0, 1, 1], "identity": 2}, {"box": [0, 0, 1, 1]}]}, "share an identity"),
    ({"frame_start": 4, "frame_end": 4}, "holds no frame"),
])
def test_invalid_segment_specs_give_one_clear_line(changes, message):
    with pytest.raises(ProtocolError, match=message.replace("[", r"\[").replace("|", r"\|")):
        protocol.SegmentSpec.from_dict({"task": "masks", "source": "clip.mp4", **changes})


def test_a_matte_keeps_every_instance_whatever_the_identity_limit():
    assert protocol.SegmentSpec(task="matte", source="frames", max_identities=40).validate()


def test_submit_messages_name_their_task():
    assert isinstance(protocol.spec_from_submit({"job": {"driving": "a.mp4", "reference": "b.png"}}), JobSpec)
    spec = protocol.spec_from_submit({"task": "matte", "job": {"source": "frames"}})
    assert spec.task == "matte"
    with pytest.raises(ProtocolError, match="task must be one of generate, masks, matte"):
        protocol.spec_from_submit({"task": "render", "job": {}})
    with pytest.raises(ProtocolError, match="differ"):
        protocol.spec_from_submit({"task": "masks", "job": {"task": "matte", "source": "frames"}})


def test_a_generation_matte_needs_a_prompt():
    assert JobSpec(driving="a", reference="b", matte=True).validate().matte_prompt == "person"
    with pytest.raises(ProtocolError, match="a matte needs a text prompt"):
        JobSpec(driving="a", reference="b", matte=True, matte_prompt=" ").validate()


# -- numbers a run cannot use (issue 14, item 7) -------------------------------------------------


@pytest.mark.parametrize("changes, message", [
    ({"guidance": float("inf")}, "guidance must be a finite number, got inf"),
    ({"guidance": float("nan")}, "guidance must be a finite number, got nan"),
    ({"guidance": -0.5}, "guidance must be 0 to 20, got -0.5"),
    ({"guidance": 21}, "guidance must be 0 to 20"),
    ({"shift": -1.0}, "shift must be 0.1 to 20, got -1"),
    ({"shift": 0}, "shift must be 0.1 to 20, got 0"),
    ({"shift": float("-inf")}, "shift must be a finite number"),
    ({"model_fps": 0}, "model frame rate must be 0.1 to 1000, got 0"),
    ({"model_fps": float("nan")}, "model frame rate must be a finite number"),
    ({"driving_fps": float("inf")}, "driving frame rate must be a finite number"),
    ({"driving_fps": -24.0}, "driving frame rate must be 0.1 to 1000"),
    ({"seed": 2 ** 64}, "seed must be -1 \\(pick one\\) or 0 to 2\\*\\*64 - 1"),
    ({"seed": 2 ** 200}, "seed must be -1"),
    ({"seed": -2}, "seed must be -1"),
    ({"height": 32000, "width": 32000}, "size 32000x32000 is over the limit of 2048 pixels a side"),
    ({"height": 2048, "width": 2080}, "over the limit of 2048"),
    ({"steps": 10 ** 12}, "steps must be at least 1 and at most 10000"),
    ({"sampler": "dpm"}, "sampler must be one of unipc, dpm\\+\\+, euler"),
    ({"max_input_pixels": 0}, "max_input_pixels must be 1 to 1073741824"),
    ({"max_input_pixels": 2 ** 31}, "max_input_pixels must be 1 to"),
    ({"driving": ""}, "no driving clip given"),
    ({"reference": " "}, "no reference image given"),
    ({"reference_mask": "mask\x00.png"}, "reference_mask holds a NUL character"),
    ({"loras": [{"path": "l.safetensors", "strength": float("nan")}]}, "LoRA strength must be a number from -10 to 10"),
    ({"loras": [{"path": "l.safetensors", "strength": 1e9}]}, "LoRA strength must be a number"),
    ({"loras": [{"path": "l.safetensors", "strength": "1"}]}, "LoRA strength must be a number"),
    ({"loras": [{"strength": 1.0}]}, 'each LoRA must be {"path": FILE'),
    ({"loras": [{"path": "l.safetensors", "weight": 1.0}]}, "unknown LoRA settings: weight"),
])
def test_impossible_numbers_and_settings_are_refused_in_one_line(changes, message):
    data = JobSpec(driving="a.mp4", reference="b.png").to_dict() | changes
    with pytest.raises(ProtocolError, match=message) as info:
        JobSpec.from_dict(data)
    assert "\n" not in str(info.value) and len(str(info.value)) <= 200


@pytest.mark.parametrize("changes", [
    {"guidance": 0}, {"guidance": 0.5}, {"guidance": 1}, {"guidance": 20.0},
    {"shift": 0.1}, {"shift": 20}, {"seed": 0}, {"seed": 2 ** 64 - 1},
    {"seed": -1}, {"height": 2048, "width": 2048}, {"steps": 10_000}, {"model_fps": 0.1}, {"driving_fps": 1000},
    {"sampler": "euler"}, {"sampler": "dpm++"}, {"sampler": "unipc"},
    {"max_input_pixels": 1}, {"max_input_pixels": 2 ** 30},
    {"loras": [{"path": "l.safetensors", "strength": -10}, {"path": "m.safetensors"}]},
])
def test_the_edges_of_every_range_are_accepted(changes):
    spec = JobSpec.from_dict(JobSpec(driving="a.mp4", reference="b.png").to_dict() | changes)
    json.dumps(spec.to_dict(), allow_nan=False)  # a valid job is always plain JSON


def test_the_input_pixel_limit_has_a_sane_default():
    assert JobSpec(driving="a", reference="b").max_input_pixels == protocol.DEFAULT_MAX_INPUT_PIXELS == 8192 * 8192


@pytest.mark.parametrize("changes, message", [
    ({"subjects": [{"box": [0, 0, float("inf"), 9]}]}, "a subject box is"),
    ({"subjects": [{"points": [[float("nan"), 2]]}]}, "subject points are"),
    ({"pick": [-1]}, "picked instance indices count from 0"),
    ({"source": ""}, "no source clip or image given"),
    ({"source": "clip\x00.mp4"}, "source holds a NUL character"),
])
def test_impossible_segment_settings_are_refused(changes, message):
    with pytest.raises(ProtocolError, match=message):
        protocol.SegmentSpec.from_dict({"task": "masks", "source": "clip.mp4", **changes})


def test_same_job_reads_both_sides_as_job_specs_and_ignores_safety_limits():
    spec = JobSpec(driving="a.mp4", reference="b.png", seed=4)
    recorded = spec.to_dict()
    del recorded["max_input_pixels"]  # a manifest written before the setting existed
    assert protocol.same_job(recorded, spec)
    assert protocol.same_job(spec.to_dict(), JobSpec(driving="a.mp4", reference="b.png", seed=4, max_input_pixels=10))
    assert not protocol.same_job(recorded, JobSpec(driving="a.mp4", reference="b.png", seed=5))
    assert not protocol.same_job(recorded | {"guidance": float("nan")}, spec)
    assert protocol.same_job(recorded, spec.to_dict())


def test_a_job_takes_at_most_the_contracts_extra_views():
    """The limit is the contract's: the CLI and the worker refuse what the add-on's panel would not offer."""
    views = [f"view{i}.png" for i in range(protocol.MAX_EXTRA_VIEWS + 1)]
    JobSpec(driving="a.mp4", reference="b.png", extra_references=views[:-1]).validate()
    with pytest.raises(ProtocolError, match=f"at most {protocol.MAX_EXTRA_VIEWS} extra reference views, got 9"):
        JobSpec(driving="a.mp4", reference="b.png", extra_references=views).validate()


@pytest.mark.parametrize("file_name, link_name", [
    ("Zoé (final).png", "Zoé__final_.png"),
    ("Zoe\u0301.png", "Zoé.png"),  # macOS spells é as e and a combining accent: composed, not cut
    ("キャラ 参考.jpg", "キャラ_参考.jpg"),
    ("-shot.png", "shot.png"),  # a leading dash is not read as an option by any tool
    (".hidden.png", "hidden.png"),
    ("..png", "input.png"),
    ("take 3.", "take_3"),
    ("plan séquence", "plan_séquence"),
    ("キ" * 150 + ".png", "キ" * 65 + ".png"),  # 195 + 4 bytes of UTF-8: the extension kept whole
])
def test_an_upload_is_linked_by_its_own_name_in_any_script_made_safe(file_name, link_name):
    made = protocol.link_name_for(file_name)
    assert made == link_name and protocol.is_link_name(made)


@pytest.mark.parametrize("name", ["", ".x", "-x", " x", "a/b", "a\\b", "a:b", "Zoe\u0301.png", "é" * 101,
                                  None, 3])
def test_names_the_worker_would_not_link_by_are_refused(name):
    assert not protocol.is_link_name(name)


class Arrivals:
    """`recv_into` over what a socket would hand out, one item a call: bytes (as much as fits), an
    exception to raise (a non-blocking socket with nothing ready), or b"" (the end)."""

    def __init__(self, *items):
        self.items, self.calls = list(items), 0

    def __call__(self, view):
        self.calls += 1
        item = self.items.pop(0)
        if isinstance(item, BaseException):
            raise item
        view[: len(item)] = item
        return len(item)


def test_a_payload_is_received_record_after_record_in_one_call_until_whole_or_nothing_is_ready():
    reader = protocol.FrameReader(100, binary=True)
    buffer = bytearray(64)
    header = b'{"type":"blob_put","payload":10}\n'
    arrivals = Arrivals(header + b"ab", b"cde", b"fg", ssl.SSLWantReadError(), ssl.SSLWantReadError(), b"hij",
                        b'{"type":"ping"}\n', b"")
    count, messages = reader.receive(arrivals, buffer)  # the header and the payload's first bytes
    assert (count, list(messages), reader.payload_left) == (len(header) + 2, [], 8)
    count, messages = reader.receive(arrivals, buffer)  # on until nothing is ready: the bytes so far count
    assert (count, list(messages), reader.payload_left, arrivals.calls) == (5, [], 3, 4)
    with pytest.raises(ssl.SSLWantReadError):  # still nothing, and no byte before it: the caller waits
        reader.receive(arrivals, buffer)
    count, messages = reader.receive(arrivals, buffer)
    assert (count, list(messages)) == (3, [(header[:-1], bytearray(b"abcdefghij"))])
    assert [list(reader.receive(arrivals, buffer)[1]) for _ in range(2)] == [[(b'{"type":"ping"}', None)], []]
