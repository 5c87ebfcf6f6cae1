"""A job's progress in words, the same at both ends (the add-on's panels, `python -m backend jobs`)."""

from __future__ import annotations

import pytest

from protocol.progress_text import progress_fields_text, progress_text


@pytest.mark.parametrize("fields, said", [
    ({"phase": "load", "segment": 0, "segments": 0}, "Loading the model"),
    ({"phase": "encode", "segment": 0, "segments": 2}, "Encoding the inputs"),
    ({"phase": "sample", "segment": 2, "segments": 3, "step": 1, "steps": 10}, "Generating: segment 2/3, step 1/10"),
    ({"phase": "decode", "segment": 1, "segments": 3}, "Decoding frames: segment 1/3"),
    ({"phase": "segment", "frame": 2, "frames": 4}, "Segmenting: frame 2/4"),  # a segmentation: the phase its stage
    ({"phase": "matte", "stage": "write", "frame": 5, "frames": 4}, "Cutting out the characters: frame 4/4"),
    ({"phase": "something new"}, "Starting"),
    ({}, "Starting"),
])
def test_a_progress_event_in_words(fields, said):
    assert progress_fields_text(fields) == said


def test_the_add_on_and_the_command_say_it_alike():
    assert progress_text("sample", 1, 2, 14, 40) == progress_fields_text(
        {"phase": "sample", "segment": 1, "segments": 2, "step": 14, "steps": 40, "job": "1a2b"})
