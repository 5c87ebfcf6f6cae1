"""backend/farm/scail2.js, the Flamenco job type, compiled under Node with a stand-in for the Manager's API.

Approximate: the stand-in `author` (Task, Command, addCommand, addTask) records what the script asks
for; the real Manager (Go, goja) is not installable here. The compiled tasks must be the farm's task
command (`templates.task_args`, what the OpenJD steps run), and one of them, with the Manager's
variables filled in, is run for real.
"""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.cli import build_parser
from backend.farm.templates import BOOTSTRAP, task_args

REPO = Path(__file__).resolve().parents[3]
SCRIPT = REPO / "backend" / "farm" / "scail2.js"
FOOTAGE = REPO / "tests" / "fixtures" / "footage"
NODE = shutil.which("node") or "/usr/bin/node"

# The stand-in: Flamenco's `author` and `print`, the script evaluated as the Manager does (its top-level
# consts stay in the script's scope), then compileJob on the submitted job's settings.
HARNESS = r"""
const fs = require("fs");
const vm = require("vm");
const [script, submission] = process.argv.slice(2);
const author = {
    Task: (name, type) => ({ name, type, commands: [], dependencies: [],
                             addCommand(command) { this.commands.push(command); },
                             addDependency(task) { this.dependencies.push(task.name); } }),
    Command: (name, parameters) => ({ name, parameters }),
};
const sandbox = vm.createContext({ author, print: () => {} });
vm.runInContext(fs.readFileSync(script, "utf8"), sandbox, { filename: script });
const tasks = [];
const job = { settings: JSON.parse(fs.readFileSync(submission, "utf8")).settings,
              addTask: (task) => tasks.push(task) };
let error = null;
try { vm.runInContext("compileJob", sandbox)(job); } catch (e) { error = String(e); }
process.stdout.write(JSON.stringify({ jobType: vm.runInContext("JOB_TYPE", sandbox), tasks, error,
                                      bootstrap: vm.runInContext("BOOTSTRAP", sandbox) }));
"""


def compile_job(tmp_path: Path, submission: dict) -> dict:
    (tmp_path / "harness.js").write_text(HARNESS)
    path = tmp_path / "submission.json"
    path.write_text(json.dumps(submission))
    run = subprocess.run([NODE, tmp_path / "harness.js", SCRIPT, path], capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    return json.loads(run.stdout)


@pytest.fixture()
def farm_dir(tmp_path: Path) -> Path:
    if not Path(NODE).is_file():
        pytest.skip("needs node")
    spec = {"driving": str(FOOTAGE / "scail_001_driving.mp4"), "reference": str(FOOTAGE / "scail_001_ref.jpg"),
            "width": 64, "height": 32, "steps": 1, "frame_end": 4, "seed": 1}
    for name in ("sh010_anna", "sh010_ben"):
        (tmp_path / f"{name}.json").write_text(json.dumps(spec))
    out = tmp_path / "farm"
    run = subprocess.run([sys.executable, "-m", "backend", "farm", "bundle", tmp_path / "sh010_anna.json",
                          tmp_path / "sh010_ben.json", "--out", out, "--weights", "/models/SCAIL-2"], cwd=REPO,
                         capture_output=True, text=True, timeout=120)
    assert run.returncode == 0, run.stderr
    return out


def test_one_exec_task_of_type_scail2_per_bundle(farm_dir, tmp_path):
    template = json.loads((farm_dir / "template.json").read_text())  # bundled for cuda: steps want a GPU
    assert all(s["hostRequirements"]["amounts"] == [{"name": "amount.worker.gpu", "min": 1}] for s in template["steps"])
    submission = json.loads((farm_dir / "flamenco-job.json").read_text())
    assert submission["type"] == "scail2" and submission["settings"]["shots"] == "sh010_anna,sh010_ben"
    compiled = compile_job(tmp_path, submission)
    assert compiled["error"] is None
    assert compiled["bootstrap"] == BOOTSTRAP
    keys = {s["key"] for s in compiled["jobType"]["settings"]}
    assert set(submission["settings"]) <= keys  # every submitted setting is one the job type declares
    settings = submission["settings"]
    assert [(t["name"], t["type"]) for t in compiled["tasks"]] == [("scail2-sh010_anna", "scail2"),
                                                                  ("scail2-sh010_ben", "scail2")]
    for task, name in zip(compiled["tasks"], ("sh010_anna", "sh010_ben")):
        [command] = task["commands"]
        assert command["name"] == "exec" and command["parameters"]["exe"] == "{scail2_python}"
        assert command["parameters"]["args"] == task_args(
            "{scail2_backend}", f"{farm_dir.resolve()}/{name}", model="scail2", weights="{scail2_weights}",
            device="cuda", storage="bf16", offload="none", extra_args="")
        assert task["dependencies"] == []  # shots and characters run in parallel
    farm_args = build_parser().parse_args(compiled["tasks"][0]["commands"][0]["parameters"]["args"][3:])
    assert (farm_args.command, farm_args.farm_command, farm_args.bundle) == (
        "farm", "run", f"{farm_dir.resolve()}/sh010_anna")


def test_the_compiled_command_runs_with_the_managers_variables_filled_in(farm_dir, tmp_path):
    submission = json.loads((farm_dir / "flamenco-job.json").read_text())
    command = compile_job(tmp_path, submission)["tasks"][1]["commands"][0]["parameters"]
    filled = {"{scail2_python}": sys.executable, "{scail2_backend}": str(REPO), "{scail2_weights}": "/models/SCAIL-2"}
    exe = filled[command["exe"]]
    args = [filled.get(arg, arg) for arg in command["args"]]
    # A finished job folder: the task checks the bundle and stops before any model time.
    (farm_dir / "sh010_ben" / "output" / "state.json").write_text(json.dumps({"status": "done"}))
    run = subprocess.run([exe, *args], cwd=tmp_path, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    job_dir = farm_dir.resolve() / "sh010_ben" / "output"
    assert run.stdout.strip() == f"bundle sh010_ben: already done ({job_dir})"


def test_bad_settings_fail_the_compile(tmp_path):
    if not Path(NODE).is_file():
        pytest.skip("needs node")
    settings = {"farm_dir": "/farm", "shots": "ok,../escape", "python": "p", "backend_dir": "b", "model": "scail2",
                "weights": "w", "device": "cuda", "storage": "bf16", "offload": "none", "extra_args": ""}
    assert compile_job(tmp_path, {"settings": settings})["error"] == "'../escape' is not a bundle name"
    assert "names no bundles" in compile_job(tmp_path, {"settings": dict(settings, shots=" , ")})["error"]
