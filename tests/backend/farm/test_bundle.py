"""`python -m backend farm bundle|run|status` on real files, as real subprocesses (no model is loaded).

A bundle holds the spec's inputs (its own bytes: clones or copies, never hard links; the originals untouched), its spec with
bundle-relative paths and a drawn seed; bundling again keeps it; a changed input is refused before
any model time; `farm run` asks `generate` for exactly the bundled spec.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import cv2
import numpy as np
import pytest

import protocol
from backend.cli import build_parser, spec_from_args
from backend.farm import bundle as bundle_module
from backend.farm.bundle import BundleError, read_bundle, write_bundle
from backend.farm.run import generate_argv, task_argv

REPO = Path(__file__).resolve().parents[3]
FOOTAGE = REPO / "tests" / "fixtures" / "footage"


def farm(*args: str, stdin: str | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", "farm", *map(str, args)], cwd=REPO, input=stdin,
                          capture_output=True, text=True, timeout=120)


@pytest.fixture()
def shot(tmp_path: Path) -> dict:
    """A spec over files of our own: a video, a reference still and a mask as a printf frame pattern."""
    src = tmp_path / "src"
    (src / "masks").mkdir(parents=True)
    shutil.copy(FOOTAGE / "scail_001_driving.mp4", src / "driving.mp4")
    shutil.copy(FOOTAGE / "scail_001_ref.jpg", src / "ref.jpg")
    for i in range(3):
        cv2.imwrite(str(src / "masks" / f"m_{i:04d}.png"), np.full((8, 8, 3), 40 * i, np.uint8))
    (src / "masks" / "notes.txt").write_text("not a frame")
    spec = {"driving": str(src / "driving.mp4"), "reference": str(src / "ref.jpg"),
            "driving_mask": str(src / "masks" / "m_%04d.png"), "width": 64, "height": 32, "steps": 1, "seed": -1}
    path = tmp_path / "shot010.json"
    path.write_text(json.dumps(spec))
    return {"spec": spec, "path": path, "src": src, "farm": tmp_path / "farm"}


def snapshot(folder: Path) -> dict:
    return {str(p.relative_to(folder)): (p.stat().st_size, p.read_bytes()) for p in sorted(folder.rglob("*"))
            if p.is_file()}


def test_a_bundle_holds_its_inputs_a_relative_spec_and_a_fixed_seed(shot):
    before = snapshot(shot["src"])
    run = farm("bundle", shot["path"], "--out", shot["farm"], "--model", "tiny", "--device", "cpu")
    assert run.returncode == 0, run.stderr
    folder = shot["farm"] / "shot010"
    assert f"bundle shot010: {folder}" in run.stdout
    spec = json.loads((folder / "job.json").read_text())
    assert spec["driving"] == "inputs/driving/driving.mp4"
    assert spec["reference"] == "inputs/reference/ref.jpg"
    assert spec["driving_mask"] == "inputs/driving_mask/m_%04d.png"  # still a pattern, now over the copies
    assert 0 <= spec["seed"] < protocol.SEED_LIMIT  # drawn once: every attempt makes the same noise
    assert (spec["width"], spec["height"], spec["steps"]) == (64, 32, 1)
    assert sorted(p.name for p in (folder / "inputs" / "driving_mask").iterdir()) == [
        "m_0000.png", "m_0001.png", "m_0002.png"]  # the pattern's frames only
    # Files of their own (clones where the file system can), the originals left exactly as they were.
    assert not os.path.samefile(folder / spec["driving"], shot["src"] / "driving.mp4")
    assert snapshot(shot["src"]) == before
    record = json.loads((folder / "bundle.json").read_text())
    files = {f["path"]: f for entry in record["inputs"] for f in entry["files"]}
    assert set(files) == {"inputs/driving/driving.mp4", "inputs/reference/ref.jpg", *(
        f"inputs/driving_mask/m_{i:04d}.png" for i in range(3))}
    assert all(set(f) == {"path", "bytes", "sha256", "cloned"} for f in files.values())
    reference_bytes = (shot["src"] / "ref.jpg").read_bytes()
    assert files["inputs/reference/ref.jpg"]["sha256"] == hashlib.sha256(reference_bytes).hexdigest()
    assert (folder / "output").is_dir() and not any((folder / "output").iterdir())
    assert not [p for p in shot["farm"].iterdir() if p.name.startswith(".")]  # no temporary folder left


def test_bundling_again_keeps_the_bundle_and_its_results_another_spec_is_refused(shot):
    assert farm("bundle", shot["path"], "--out", shot["farm"], "--model", "tiny").returncode == 0
    folder = shot["farm"] / "shot010"
    (folder / "output" / "frame.png").write_bytes(b"written by the farm")
    seed = json.loads((folder / "job.json").read_text())["seed"]
    again = farm("bundle", shot["path"], "--out", shot["farm"], "--model", "tiny")
    assert again.returncode == 0 and "(unchanged)" in again.stdout, again.stdout + again.stderr
    assert json.loads((folder / "job.json").read_text())["seed"] == seed
    assert (folder / "output" / "frame.png").read_bytes() == b"written by the farm"
    before = snapshot(folder)
    shot["path"].write_text(json.dumps(dict(shot["spec"], prompt="another take")))
    other = farm("bundle", shot["path"], "--out", shot["farm"], "--model", "tiny")
    assert other.returncode == 2
    assert other.stderr.strip() == f"error: {folder} holds another bundle; choose another name or farm folder"
    assert snapshot(folder) == before


def test_bad_input_is_one_line_and_writes_nothing(shot, tmp_path):
    missing = tmp_path / "missing.json"
    missing.write_text(json.dumps(dict(shot["spec"], reference=str(tmp_path / "gone.png"))))
    run = farm("bundle", shot["path"], missing, "--out", shot["farm"])
    assert run.returncode == 2 and run.stderr.strip() == f"error: reference not found: {tmp_path / 'gone.png'}"
    assert not shot["farm"].exists()  # checked before the first bundle was written
    bad = farm("bundle", "-", "--name", "x", "--out", shot["farm"], stdin=json.dumps(dict(shot["spec"], steps=0)))
    assert bad.returncode == 2 and bad.stderr.strip().startswith("error: bad job spec: steps must be at least 1")
    assert len(bad.stderr.strip().splitlines()) == 1 and not shot["farm"].exists()
    named = farm("bundle", "-", "--out", shot["farm"], "--name", "../up", stdin=json.dumps(shot["spec"]))
    assert named.returncode == 2 and "bundle name '../up'" in named.stderr


def test_an_original_edited_in_place_after_bundling_leaves_the_bundle_intact(shot):
    """Issue 30, item 4: an editor saving over the clip (same inode) must not reach into the bundle."""
    assert farm("bundle", shot["path"], "--out", shot["farm"]).returncode == 0
    folder = shot["farm"] / "shot010"
    kept = (folder / "inputs" / "driving" / "driving.mp4").read_bytes()
    with open(shot["src"] / "driving.mp4", "r+b") as original:  # in place: same inode, new bytes
        original.write(b"\0" * 4096)
    assert (folder / "inputs" / "driving" / "driving.mp4").read_bytes() == kept
    assert read_bundle(folder, verify=True).name == "shot010"  # still whole: `farm run` takes it


def test_a_plain_copy_where_the_file_system_cannot_clone(shot, monkeypatch):
    def no_clones(source_fd, target_fd):
        raise OSError(errno.EOPNOTSUPP, "Operation not supported")

    monkeypatch.setattr(bundle_module, "_clone", no_clones)
    monkeypatch.setattr(bundle_module.os, "link", lambda *a: pytest.fail("a bundle never hard-links"))
    spec = protocol.JobSpec.from_dict(shot["spec"])
    made = write_bundle(spec, shot["farm"], "copied")
    assert not any(f["cloned"] for entry in made.record["inputs"] for f in entry["files"])
    copy = made.folder / made.spec.reference
    assert copy.read_bytes() == (shot["src"] / "ref.jpg").read_bytes()
    assert not os.path.samefile(copy, shot["src"] / "ref.jpg")


def test_a_spec_that_is_not_json_text_is_one_line(shot, tmp_path):
    """Issue 30, item 5: UTF-16 (starts with \\xff\\xfe) or any other bytes: exit 2, one line, no traceback."""
    utf16 = tmp_path / "utf16.json"
    utf16.write_bytes(b"\xff\xfe" + json.dumps(shot["spec"]).encode("utf-16-le"))
    run = farm("bundle", utf16, "--out", shot["farm"])
    assert run.returncode == 2 and "Traceback" not in run.stderr, run.stderr
    assert run.stderr.strip() == f"error: job spec {utf16}: not a JSON file (not UTF-8 text)"
    piped = farm("bundle", "-", "--name", "x", "--out", shot["farm"], stdin="{not json")
    assert piped.returncode == 2 and len(piped.stderr.strip().splitlines()) == 1, piped.stderr
    assert piped.stderr.startswith("error: job spec -: damaged JSON") and not shot["farm"].exists()


def test_stdin_json_summary_and_status(shot):
    run = farm("bundle", "-", "--name", "hero", "--out", shot["farm"], "--json", stdin=json.dumps(shot["spec"]))
    assert run.returncode == 0, run.stderr
    summary = json.loads(run.stdout)
    folder = shot["farm"].resolve() / "hero"
    assert summary["bundles"][0]["folder"] == str(folder)
    assert summary["bundles"][0]["job_dir"] == str(folder / "output")
    assert summary["openjd"] == str(shot["farm"].resolve() / "template.json")
    status = farm("status", shot["farm"])
    assert status.returncode == 0 and status.stdout.strip() == "hero: not started"


def test_farm_run_refuses_a_changed_input_before_the_model(shot):
    assert farm("bundle", shot["path"], "--out", shot["farm"]).returncode == 0
    folder = shot["farm"] / "shot010"
    (folder / "inputs" / "reference" / "ref.jpg").write_bytes(b"changed")  # the bundle's own copy
    run = farm("run", folder, "--model", "tiny")
    assert run.returncode == 2
    assert run.stderr.strip() == ("error: bundle shot010: inputs/reference/ref.jpg changed since it was bundled; "
                                  "bundle the shot again")
    not_a_bundle = farm("run", shot["farm"] / "nowhere", "--model", "tiny")
    assert not_a_bundle.returncode == 2 and "not a SCAIL-2 farm bundle" in not_a_bundle.stderr


def test_farm_run_asks_generate_for_exactly_the_bundled_spec(shot):
    assert farm("bundle", shot["path"], "--out", shot["farm"]).returncode == 0
    folder = shot["farm"] / "shot010"
    dry = farm("run", folder, "--weights", "/models/SCAIL-2", "--device", "cuda:1", "--storage", "fp8",
               "--extra", "--attention sage --vae-tiling", "--dry-run")
    assert dry.returncode == 0, dry.stderr
    bundled = read_bundle(folder).spec
    argv = task_argv(bundled, model="scail2", weights="/models/SCAIL-2", device="cuda:1", storage="fp8",
                     offload="none", extra="--attention sage --vae-tiling")
    assert dry.stdout.split() == argv  # no value here holds a space
    args = build_parser().parse_args(argv)
    assert spec_from_args(args).to_dict() == bundled.to_dict()
    assert (str(args.out), str(args.weights), args.device, args.storage, args.attention, args.vae_tiling) == (
        "output", "/models/SCAIL-2", "cuda:1", "fp8", "sage", True)
    relative = farm("run", folder, "--weights", "models/w", "--dry-run")  # from where the task started
    assert f"--weights={REPO / 'models' / 'w'}" in relative.stdout.split()
    with pytest.raises(BundleError, match="no weights folder"):
        task_argv(bundled, model="scail2", weights=" ", device="", storage="bf16", offload="none", extra="")


def test_every_spec_field_survives_the_generate_command_line():
    spec = protocol.JobSpec(
        driving="d/%04d.exr", reference="r.png", mode="replace", driving_mask="m.mp4", reference_mask="rm.png",
        extra_references=["a.png", "b.png"], extra_reference_masks=["am.png", "bm.png"], prompt="-a dash first",
        negative_prompt="blurry, 'quoted'", preset="fast", resolution="704p", height=320, width=192, steps=7,
        guidance=3.25, shift=0.1 + 0.2, sampler="euler", seed=2**64 - 1, model_fps=15.5, driving_fps=23.976,
        frame_start=3, frame_end=40, color_match=False, loras=[{"path": "C:/l:x.safetensors", "strength": 0.7}],
        pose_driven=True, matte=True, matte_prompt="dog", max_input_pixels=1 << 20).validate()
    args = build_parser().parse_args(["generate", *generate_argv(spec, "out"), "--model", "tiny"])
    assert spec_from_args(args).to_dict() == spec.to_dict()
    plain = protocol.JobSpec(driving="d.mp4", reference="r.png")
    args = build_parser().parse_args(["generate", *generate_argv(plain, "out"), "--model", "tiny"])
    assert spec_from_args(args).to_dict() == plain.to_dict()


def test_bundling_needs_neither_torch_nor_numpy(shot):
    """A submit host or the add-on's machine bundles without the heavy packages (only `farm run` needs them)."""
    blocker = ("import sys; sys.modules.update(numpy=None, torch=None, cv2=None); from backend.cli import main; "
               "sys.exit(main(sys.argv[1:]))")
    for argv in (["bundle", shot["path"], "--out", shot["farm"], "--model", "tiny"], ["status", shot["farm"]],
                 ["run", shot["farm"] / "shot010", "--model", "tiny", "--dry-run"]):
        run = subprocess.run([sys.executable, "-c", blocker, "farm", *map(str, argv)], cwd=REPO,
                             capture_output=True, text=True, timeout=60)
        assert run.returncode == 0, (argv, run.stderr[-800:])


@pytest.mark.parametrize("name", ["template.json", "flamenco-job.json"])
def test_another_tools_description_in_the_farm_folder_is_refused_and_kept(shot, name):
    assert farm("bundle", shot["path"], "--out", shot["farm"], "--model", "tiny").returncode == 0
    again = farm("bundle", shot["path"], "--out", shot["farm"], "--model", "tiny")  # ours: written again
    assert again.returncode == 0, again.stderr
    theirs = shot["farm"] / name
    theirs.write_text(json.dumps({"specificationVersion": "jobtemplate-2023-09", "name": "comp render",
                                  "type": "blender", "steps": []}))
    before = snapshot(shot["farm"])
    other = dict(shot["spec"], prompt="another shot")
    run = farm("bundle", "-", "--name", "shot020", "--out", shot["farm"], "--model", "tiny", stdin=json.dumps(other))
    assert run.returncode == 2
    assert run.stderr.strip() == (f"error: {theirs} is not a SCAIL-2 farm description (another tool's?); choose "
                                  "another farm folder (nothing was written)")
    assert snapshot(shot["farm"]) == before
