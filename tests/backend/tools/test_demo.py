"""`python -m backend demo` never deletes or overwrites what it did not write."""

from __future__ import annotations

import json

import pytest

from backend import cli
from backend.tools.demo import _remove_demo_job

pytestmark = pytest.mark.slow  # the demo generates


def contents(folder):
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


@pytest.mark.parametrize("user_file", ["notes.txt", "inputs/my_clip.mp4", "job/frames/frame_000000.png"])
def test_the_demo_refuses_a_folder_holding_anything_it_did_not_write(tmp_path, capsys, user_file):
    out = tmp_path / "demo"
    (out / user_file).parent.mkdir(parents=True)
    (out / user_file).write_bytes(b"the user's own")
    assert cli.main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {out} holds ") and "\n" not in err, err
    assert contents(out) == {user_file: b"the user's own"}


def test_only_the_demo_jobs_own_files_are_removed_before_it_generates_afresh(tmp_path):
    job = tmp_path / "demo" / "job"
    (job / "frames").mkdir(parents=True)
    (job / "history").mkdir()
    (job / "manifest.json").write_text(json.dumps({"job": {"driving": str(tmp_path / "demo/inputs/driving.mp4")}}))
    for name in ("state.json", "preview.mp4", "review.json", "frames/frame_000000.png",
                 "frames/.frame_000001.png.0a1b2c3d.tmp", "history/segment_000001.safetensors"):
        (job / name).write_bytes(b"demo")
    (job / "frames" / "keep.png").write_bytes(b"the user's own")
    _remove_demo_job(job)
    assert contents(job) == {"frames/keep.png": b"the user's own"}
    assert sorted(p.name for p in job.iterdir()) == ["frames"]


def test_the_demo_run_again_in_its_folder_generates_afresh(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out)]) == 0
    first = contents(out / "job")
    assert "review.json" in first and "frames/frame_000095.png" in first  # the take is scored as it is made
    capsys.readouterr()
    assert cli.main(["demo", "--out", str(out)]) == 0, capsys.readouterr().err
    assert sorted(contents(out / "job")) == sorted(first)


def test_the_demo_refuses_its_own_job_folder_once_it_holds_a_file_of_someone_elses(tmp_path, capsys):
    out = tmp_path / "demo"
    assert cli.main(["demo", "--out", str(out)]) == 0
    (out / "job" / "mattes").mkdir()
    (out / "job" / "mattes" / "frame_000000.png").write_bytes(b"made by the matte command")
    before = contents(out)
    capsys.readouterr()
    assert cli.main(["demo", "--out", str(out)]) == 2
    err = capsys.readouterr().err.strip()
    assert err == (f"error: {out} holds job/mattes, which the demo did not write; choose an empty or new folder "
                   "(nothing in it was changed)")
    assert contents(out) == before


def test_a_demo_folder_under_a_file_is_one_line(tmp_path, capsys):
    a_file = tmp_path / "notes.txt"
    a_file.write_text("mine")
    assert cli.main(["demo", "--out", str(a_file / "demo")]) == 2
    assert capsys.readouterr().err.strip() == (f"error: {a_file / 'demo'} cannot be made: {a_file} is a file, not a "
                                               "folder; choose an empty or new folder (nothing in it was changed)")
