"""core.takes: shots and versions, review.json written atomically and read back, wedges, flags, changed inputs."""

import os

import pytest

from scail2 import protocol
from scail2.core import takes

pytestmark = pytest.mark.lts


def manifest(driving="/footage/a.mp4", digest="aa" * 32, start=0, end=8, mode="animate", reference="/r.png"):
    return {"job": {"driving": driving, "reference": reference, "mode": mode, "frame_start": start, "frame_end": end},
            "inputs": {driving: digest, reference: "bb" * 32}, "frames": [{"index": k} for k in range(end - start)]}


def test_a_shot_is_its_driving_footage_mode_and_frame_range():
    base = takes.shot_key(manifest())
    assert base.startswith("shot-")
    # Another reference or another file name with the same bytes: the same shot (takes vary the reference).
    assert takes.shot_key(manifest(reference="/other.png")) == base
    assert takes.shot_key(manifest(driving="/copy/a.mp4")) == base
    assert takes.shot_key(manifest(end=9)) != base
    assert takes.shot_key(manifest(digest="cc" * 32)) != base
    assert takes.shot_key(manifest(mode="replace")) != base


def test_versions_and_rows_tell_takes_apart():
    assert takes.next_version([]) == 1
    assert takes.next_version([1, 3, 0]) == 4
    rows = {takes.take_row_text("Dancer", v, "new", 0, seed) for v, seed in ((1, 5), (2, 6), (3, 7))}
    assert len(rows) == 3
    row = takes.take_row_text("Dancer", 3, "approved", 3, 1234)
    assert row == "v003 \u00b7 Dancer \u00b7 Approved \u00b7 \u2605\u2605\u2605 \u00b7 seed 1234"
    assert takes.matches_filter("rejected", set()) and not takes.matches_filter("rejected", {"approved"})


def test_review_json_is_written_atomically_and_read_back(tmp_path):
    assert takes.read_review(str(tmp_path)) is None
    review = protocol.TakeReview(format=protocol.REVIEW_FORMAT, job_id="job-1", version=2, status="on_hold",
                                 rating=4, notes=[protocol.Note(frame=3, text="hand pops")])
    takes.write_review(str(tmp_path), review)
    assert os.listdir(tmp_path) == [protocol.REVIEW_NAME]  # no temporary file left behind
    assert takes.read_review(str(tmp_path)) == review
    assert takes.updated(review, rating=5).rating == 5
    with pytest.raises(protocol.ProtocolError):
        takes.updated(review, rating=9)
    (tmp_path / protocol.REVIEW_NAME).write_text("{broken")
    with pytest.raises(protocol.ProtocolError) as caught:
        takes.read_review(str(tmp_path))
    assert "\n" not in str(caught.value) and protocol.REVIEW_NAME in str(caught.value)


def test_changed_inputs_are_found_by_their_sha256(tmp_path):
    still = tmp_path / "ref.png"
    still.write_bytes(b"first")
    recorded = takes.recorded_inputs(None, {"job": {"reference": str(still)},
                                            "inputs": {str(still): takes.file_sha256(str(still))}})
    assert recorded == [("reference", str(still), takes.file_sha256(str(still)))]
    assert takes.changed_inputs(recorded) == []
    still.write_bytes(b"second")
    assert takes.changed_inputs(recorded) == [("reference", str(still), "changed (its SHA-256 differs)")]
    still.unlink()
    assert takes.changed_inputs(recorded)[0][2] == "is missing"
    # The recipe's list wins over the manifest's.
    review = protocol.TakeReview(format=protocol.REVIEW_FORMAT, job_id="j", recipe=protocol.Recipe(
        job={}, seed=1, inputs=[protocol.RecipeFile(role="driving", path="/d.mp4", sha256="ff")]))
    assert takes.recorded_inputs(review, {"inputs": {"/x": "1"}}) == [("driving", "/d.mp4", "ff")]


def test_wedges(tmp_path):
    assert takes.wedge_variations("SEED", 3, "", {"seed": 41}) == [{"seed": 41}, {"seed": 42}, {"seed": 43}]
    assert takes.wedge_variations("GUIDANCE", 0, "3, 4.5;6", {}) == [{"guidance": 3.0}, {"guidance": 4.5},
                                                                      {"guidance": 6.0}]
    assert takes.wedge_variations("SAMPLER", 0, "UniPC, euler", {}) == [{"sampler": "unipc"}, {"sampler": "euler"}]
    stills = [tmp_path / "a.png", tmp_path / "b.png"]
    for still in stills:
        still.write_bytes(b"x")
    found = takes.wedge_variations("REFERENCE", 0, "{:s};\n{:s}".format(*map(str, stills)), {})
    assert [f["reference"] for f in found] == list(map(str, stills))
    lora = {"loras": [{"path": "/l.safetensors", "strength": 1.0}]}
    assert takes.wedge_variations("LORA", 0, "0.5,1", lora)[0]["loras"] == [{"path": "/l.safetensors", "strength": 0.5}]
    for kind, count, text, spec, words in (
            ("SEED", 0, "", {}, "1 to 32"), ("GUIDANCE", 0, "3, x", {}, "'x' is not a number"),
            ("GUIDANCE", 0, "99", {}, "outside"), ("GUIDANCE", 0, " , ", {}, "List the values"),
            ("SAMPLER", 0, "ddim", {}, "Unknown sampler"), ("LORA", 0, "1", {}, "no LoRA"),
            ("REFERENCE", 0, str(tmp_path / "none.png"), {}, "not found")):
        with pytest.raises(ValueError) as caught:
            takes.wedge_variations(kind, count, text, spec)
        assert words in str(caught.value)


def test_flags_and_note_markers():
    scores = protocol.TakeScores(scores=[], flags=[
        protocol.Flag(frame=7, score="motion", reason="far below"), protocol.Flag(frame=2, score="faces", reason="lost"),
        protocol.Flag(frame=7, score="temporal", reason="pop")])
    assert takes.flag_frames(scores) == [(2, "faces: lost"), (7, "motion: far below; temporal: pop")]
    assert takes.flag_frames(None) == []
    assert takes.next_flag([2, 7], 2) == 7 and takes.next_flag([2, 7], 7) is None
    assert takes.next_flag([2, 7], 7, forward=False) == 2
    name = takes.note_marker_name("hand\n pops  here")
    assert name == protocol.NOTE_MARKER_PREFIX + "hand pops here"
    assert takes.note_from_marker(name) == "hand pops here" and takes.note_from_marker("F_12") is None
