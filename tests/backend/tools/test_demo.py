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
    (job / "manifest.json").write_text(json.dumps({"job": {"driving": str(tmp_path / "demo/inputs/driving.mp4")}}))
    for name in ("state.json", "preview.mp4", "frames/frame_000000.png", "frames/.frame_000001.png.0a1b2c3d.tmp"):
        (job / name).write_bytes(b"demo")
    (job / "frames" / "keep.png").write_bytes(b"the user's own")
    _remove_demo_job(job)
    assert contents(job) == {"frames/keep.png": b"the user's own"}
