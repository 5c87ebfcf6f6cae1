"""The farm folder's OpenJD job template, checked and run by the real `openjd` command line (openjd-cli).

`openjd check` validates the template; `openjd run` runs one step (one bundle, tiny profile on the
CPU, 4 frames at 64x32, 1 step) in a local session to its end, and the frames land in the bundle's
job folder. Run again, the finished step costs no model time.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[3]
FOOTAGE = REPO / "tests" / "fixtures" / "footage"
OPENJD = Path(sys.executable).with_name("openjd")

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def farm_dir(tmp_path_factory) -> Path:
    if not OPENJD.is_file():
        pytest.skip("needs openjd-cli in the backend environment")
    work = tmp_path_factory.mktemp("openjd")
    shutil.copy(FOOTAGE / "scail_001_ref.jpg", work / "ref.jpg")
    base = {"driving": str(FOOTAGE / "scail_001_driving.mp4"), "width": 64, "height": 32, "steps": 1,
            "frame_end": 4, "seed": 7}
    for name, reference in (("shot010", FOOTAGE / "scail_001_ref.jpg"), ("shot010_hero", work / "ref.jpg")):
        (work / f"{name}.json").write_text(json.dumps(dict(base, reference=str(reference))))
    out = work / "farm"
    run = subprocess.run([sys.executable, "-m", "backend", "farm", "bundle", work / "shot010.json",
                          work / "shot010_hero.json", "--out", out, "--model", "tiny", "--device", "cpu"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return out


def openjd(*args) -> subprocess.CompletedProcess:
    # From another folder: the template's PATH default (the farm folder) is its own folder, wherever it is run.
    return subprocess.run([OPENJD, *map(str, args)], cwd="/", capture_output=True, text=True, timeout=300)


def test_the_template_passes_openjd_check_with_one_step_per_bundle(farm_dir):
    template = farm_dir / "template.json"
    check = openjd("check", template)
    assert check.returncode == 0 and "passes validation checks" in check.stdout, check.stdout + check.stderr
    data = json.loads(template.read_text())
    assert data["specificationVersion"] == "jobtemplate-2023-09"
    assert [step["name"] for step in data["steps"]] == ["shot010", "shot010_hero"]
    params = {p["name"]: p for p in data["parameterDefinitions"]}
    assert params["BackendPython"]["default"] == sys.executable
    assert (params["Model"]["default"], params["Device"]["default"]) == ("tiny", "cpu")
    assert params["FarmDir"]["type"] == "PATH" and params["FarmDir"]["dataFlow"] == "INOUT"
    # No task parameters: a step is one task, the whole shot (its segments are chained).
    assert all("parameterSpace" not in step for step in data["steps"])
    assert all("hostRequirements" not in step for step in data["steps"])  # bundled for the CPU


def test_openjd_run_generates_one_bundle_into_its_job_folder(farm_dir):
    run = openjd("run", farm_dir / "template.json", "--step", "shot010_hero")
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "Session ended successfully" in run.stdout
    job_dir = farm_dir / "shot010_hero" / "output"
    manifest = json.loads((job_dir / "manifest.json").read_text())
    assert manifest["status"] == "done" and manifest["seed"] == 7
    assert [f["source_frame"] for f in manifest["frames"]] == [0, 1, 2, 3]
    assert all((job_dir / f["file"]).is_file() for f in manifest["frames"])
    assert manifest["job"]["reference"] == "inputs/reference/ref.jpg"  # relative: the same job on any mount
    assert not (farm_dir / "shot010" / "output" / "manifest.json").exists()  # only the step asked for
    again = openjd("run", farm_dir / "template.json", "--step", "shot010_hero")
    assert again.returncode == 0 and "bundle shot010_hero: already done" in again.stdout
    status = subprocess.run([sys.executable, "-m", "backend", "farm", "status", farm_dir], cwd=REPO,
                            capture_output=True, text=True, timeout=60)
    assert status.stdout.splitlines() == ["shot010: not started", "shot010_hero: done"]


def test_a_gpu_template_passes_openjd_check(farm_dir, tmp_path):
    run = subprocess.run([sys.executable, "-m", "backend", "farm", "bundle", farm_dir.parent / "shot010.json",
                          "--out", tmp_path / "gpu", "--weights", "/models/SCAIL-2", "--storage", "fp8"],
                         cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    check = openjd("check", tmp_path / "gpu" / "template.json")
    assert check.returncode == 0, check.stdout + check.stderr
    data = json.loads((tmp_path / "gpu" / "template.json").read_text())
    assert data["steps"][0]["hostRequirements"] == {"amounts": [{"name": "amount.worker.gpu", "min": 1}]}
    params = {p["name"]: p["default"] for p in data["parameterDefinitions"]}
    assert (params["Model"], params["Weights"], params["Device"], params["Storage"]) == (
        "scail2", "/models/SCAIL-2", "cuda", "fp8")
