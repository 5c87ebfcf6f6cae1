"""`check-inputs` (human and --json), and `generate` recording the checks in its manifest or, with --strict,
refusing in one line before any model is loaded."""

from __future__ import annotations

import json

import pytest
from check_clips import FOOTAGE, steady, still, write_reference, write_sequence

from backend import cli
from protocol import InputCheckReport

TINY = ["--model", "tiny", "--device", "cpu", "--height", "64", "--width", "128", "--steps", "1", "--seed", "4"]


@pytest.fixture(scope="module")
def cut_clip(tmp_path_factory):
    """A PNG sequence with a cut at frame 5, and its reference."""
    folder = tmp_path_factory.mktemp("cut")
    frames = steady(still(), 5) + steady(still("scail_001_ref.jpg"), 5, seed=1)
    return ["--driving", str(write_sequence(folder / "driving", frames)), "--driving-fps", "16",
            "--reference", str(write_reference(folder / "reference.png", frames[0]))]


def test_check_inputs_prints_the_checklist_and_exits_1_on_a_failure(cut_clip, capsys):
    assert cli.main(["check-inputs", *cut_clip]) == 1
    out = capsys.readouterr().out
    assert "FAIL  cut: A shot cut at frame 5" in out and out.strip().splitlines()[-1].startswith("FAIL: 1 failed")


def test_check_inputs_json_is_the_report_record(cut_clip, capsys):
    assert cli.main(["check-inputs", *cut_clip, "--json"]) == 1
    report = InputCheckReport.from_dict(json.loads(capsys.readouterr().out))
    assert report.verdict == "fail" and [c.frames for c in report.checks if c.name == "cut"] == [[5]]


def test_check_inputs_of_a_clean_real_clip_exits_0(capsys):
    args = ["--driving", str(FOOTAGE / "scail_001_driving.mp4"), "--reference", str(FOOTAGE / "scail_001_ref.jpg")]
    assert cli.main(["check-inputs", *args, "--end", "20"]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1].startswith("OK:")


def test_generate_strict_refuses_a_failing_clip_before_any_model(cut_clip, tmp_path, capsys, monkeypatch):
    import backend.loaders.components

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a job the checks refuse")

    monkeypatch.setattr(backend.loaders.components, "load_components", no_model)
    out = tmp_path / "job"
    assert cli.main(["generate", *cut_clip, *TINY, "--out", str(out), "--strict"]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: the input checks fail or warn (cut") and "\n" not in err
    assert not (out / "manifest.json").exists()


def test_generate_records_the_checks_in_the_manifest_and_goes_on(cut_clip, tmp_path, capsys):
    out = tmp_path / "job"
    assert cli.main(["generate", *cut_clip, *TINY, "--out", str(out)]) == 0
    assert "fail: A shot cut at frame 5" in capsys.readouterr().out
    manifest = json.loads((out / "manifest.json").read_text())
    report = InputCheckReport.from_dict(manifest["input_checks"])
    assert report.verdict == "fail" and not report.strict and len(report.source_frames) == 10
