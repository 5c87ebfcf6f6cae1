"""The farm's job descriptions of a farm folder's bundles: an OpenJD job template and a Flamenco job.

Both run the same command per bundle (`task_args`): the backend's Python, told where the backend is
(`BOOTSTRAP` puts that folder on `sys.path`, so no working directory or environment variable is
needed), running `farm run` on the bundle. One step (OpenJD) or task (Flamenco) per bundle, never
per segment: the segments of a shot are chained by the history.

* `OPENJD_NAME`: an OpenJD job template (specification `jobtemplate-2023-09`), as AWS Deadline Cloud
  and `openjd run` take it; named `template.json`, which makes the farm folder a Deadline Cloud job
  bundle (`deadline bundle submit FARM_DIR`). Job parameters: the Python, the backend folder, the farm folder (a PATH,
  so path mapping and job attachments apply), the model, the weights folder, device and memory.
* `FLAMENCO_NAME`: the body of a Flamenco 3 job submission (`POST /api/v3/jobs`) of the job type
  `scail2` (the script `scail2.js` beside this module, installed on the Manager). Its Python, backend
  and weights settings default to the Manager variables `{scail2_python}`, `{scail2_backend}` and
  `{scail2_weights}`, which each platform's workers define.
"""

from __future__ import annotations

import json
import os
import platform
import secrets
import sys
from dataclasses import dataclass
from pathlib import Path

from .bundle import Bundle, BundleError

OPENJD_NAME = "template.json"
FLAMENCO_NAME = "flamenco-job.json"
FLAMENCO_JOB_TYPE = "scail2"
TEMPLATE_VERSION = "jobtemplate-2023-09"
# `python -c BOOTSTRAP BACKEND_DIR farm run ...`: the backend folder goes on sys.path, then
# `python -m backend farm run ...` runs with the remaining arguments.
BOOTSTRAP = "import runpy, sys; sys.path.insert(0, sys.argv.pop(1)); runpy.run_module('backend', run_name='__main__')"
MODELS = ("scail2", "tiny")
STORAGES = ("bf16", "fp8")
OFFLOADS = ("none", "model", "group")


@dataclass(frozen=True)
class TaskDefaults:
    """What a farm job runs with unless it is submitted with other values."""

    python: str = sys.executable
    backend_dir: str = str(Path(__file__).resolve().parents[2])  # the folder holding `backend/` and `protocol/`
    model: str = "scail2"
    weights: str = ""
    device: str = "cuda"
    storage: str = "bf16"
    offload: str = "none"
    extra_args: str = ""  # more `generate` options, as one line (`--attention sage --vae-tiling`)


def task_args(backend_dir: str, bundle_path: str, *, model: str, weights: str, device: str, storage: str,
              offload: str, extra_args: str) -> list[str]:
    """The arguments after the Python executable that run one bundle (values or farm placeholders)."""
    return ["-c", BOOTSTRAP, backend_dir, "farm", "run", "--model", model, "--weights", weights, "--device", device,
            "--storage", storage, "--offload", offload, "--extra", extra_args, bundle_path]


# -- OpenJD -------------------------------------------------------------------------------------------


def _parameter(name: str, kind: str, default: str, description: str, **more) -> dict:
    return {"name": name, "type": kind, "default": default, "description": description, **more}


def openjd_template(farm_dir: Path, bundles: list[Bundle], defaults: TaskDefaults) -> dict:
    """A job template with one step per bundle."""
    parameters = [
        # OpenJD joins a PATH's default to the template's folder: the farm folder is where the template is.
        _parameter("FarmDir", "PATH", ".", "The farm folder holding the bundles; results land in each bundle's "
                   "output folder", objectType="DIRECTORY", dataFlow="INOUT"),
        _parameter("BackendPython", "STRING", defaults.python, "The SCAIL-2 backend's Python on the workers"),
        _parameter("BackendDir", "STRING", defaults.backend_dir,
                   "The folder holding the backend package (the add-on's folder) on the workers"),
        _parameter("Model", "STRING", defaults.model, "scail2 (the weights folder) or tiny (the test profile)",
                   allowedValues=list(MODELS)),
        _parameter("Weights", "STRING", defaults.weights, "The SCAIL-2 weights folder on the workers"),
        _parameter("Device", "STRING", defaults.device, "cuda, cuda:1 or cpu"),
        _parameter("Storage", "STRING", defaults.storage, "Weight storage (fp8 halves memory)",
                   allowedValues=list(STORAGES)),
        _parameter("Offload", "STRING", defaults.offload, "Keep weights in CPU memory", allowedValues=list(OFFLOADS)),
        _parameter("ExtraArgs", "STRING", defaults.extra_args, "More generate options, as one line"),
    ]
    steps = []
    for bundle in bundles:
        args = task_args("{{Param.BackendDir}}", "{{Param.FarmDir}}/" + bundle.name, model="{{Param.Model}}",
                         weights="{{Param.Weights}}", device="{{Param.Device}}", storage="{{Param.Storage}}",
                         offload="{{Param.Offload}}", extra_args="{{Param.ExtraArgs}}")
        step = {"name": bundle.name, "script": {"actions": {"onRun": {
            "command": "{{Param.BackendPython}}", "args": args}}}}
        if defaults.device != "cpu":  # Deadline Cloud schedules the step on a worker with a GPU
            step["hostRequirements"] = {"amounts": [{"name": "amount.worker.gpu", "min": 1}]}
        steps.append(step)
    return {"specificationVersion": TEMPLATE_VERSION, "name": _job_name(farm_dir),
            "description": "SCAIL-2 generations, one step per shot or character (see each bundle's job.json)",
            "parameterDefinitions": parameters, "steps": steps}


# -- Flamenco ------------------------------------------------------------------------------------------


def flamenco_job(farm_dir: Path, bundles: list[Bundle], defaults: TaskDefaults, priority: int = 50) -> dict:
    """A job submission of the `scail2` job type (one task per bundle, compiled by scail2.js)."""
    settings = {
        "farm_dir": str(Path(farm_dir).resolve()),
        "shots": ",".join(bundle.name for bundle in bundles),
        "python": "{scail2_python}",
        "backend_dir": "{scail2_backend}",
        "weights": "{scail2_weights}" if defaults.model == "scail2" else defaults.weights,
        "model": defaults.model,
        "device": defaults.device,
        "storage": defaults.storage,
        "offload": defaults.offload,
        "extra_args": defaults.extra_args,
    }
    return {"name": _job_name(farm_dir), "type": FLAMENCO_JOB_TYPE, "priority": priority,
            "submitter_platform": {"Darwin": "darwin", "Windows": "windows"}.get(platform.system(), "linux"),
            "settings": settings, "metadata": {"scail2.bundles": str(len(bundles))}}


def _job_name(farm_dir: Path) -> str:
    return ("SCAIL-2 " + (Path(farm_dir).name or "farm"))[:128]


def check_job_descriptions(farm_dir: Path) -> None:
    """Raise BundleError unless the farm folder's description files are missing or earlier ones of ours: a
    farm share often holds another tool's `template.json`, which bundling must never write over."""
    for name, ours in ((OPENJD_NAME, _is_our_template), (FLAMENCO_NAME, _is_our_flamenco_job)):
        path = Path(farm_dir) / name
        if not path.exists() and not path.is_symlink():
            continue
        try:
            data = json.loads(path.read_text(encoding="utf-8")) if path.is_file() else None
        except (OSError, UnicodeDecodeError, ValueError):
            data = None
        if not (isinstance(data, dict) and ours(data)):
            raise BundleError(f"{path} is not a SCAIL-2 farm description (another tool's?); choose another farm "
                              "folder (nothing was written)")


def _is_our_template(data: dict) -> bool:
    parameters = data.get("parameterDefinitions")
    return (data.get("specificationVersion") == TEMPLATE_VERSION and str(data.get("name", "")).startswith("SCAIL-2")
            and isinstance(parameters, list) and any(isinstance(p, dict) and p.get("name") == "BackendDir"
                                                     for p in parameters))


def _is_our_flamenco_job(data: dict) -> bool:
    return data.get("type") == FLAMENCO_JOB_TYPE and str(data.get("name", "")).startswith("SCAIL-2")


def write_job_descriptions(farm_dir: Path, bundles: list[Bundle], defaults: TaskDefaults) -> dict[str, Path]:
    """Write both descriptions into the farm folder (each atomically, over earlier ones of ours only:
    `check_job_descriptions` first); their paths by kind."""
    farm_dir = Path(farm_dir)
    written = {}
    for kind, name, data in (("openjd", OPENJD_NAME, openjd_template(farm_dir, bundles, defaults)),
                             ("flamenco", FLAMENCO_NAME, flamenco_job(farm_dir, bundles, defaults))):
        path = farm_dir / name
        temp = farm_dir / f".{name}.{secrets.token_hex(4)}.tmp"
        temp.write_text(json.dumps(data, indent=2) + "\n", encoding="utf-8")
        os.replace(temp, path)
        written[kind] = path
    return written
