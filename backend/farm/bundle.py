"""A job bundle: one shot or character as a folder a farm worker can run with nothing else but the weights.

    <farm dir>/<name>/
        bundle.json     what was bundled: every input file with its size and SHA-256 (`BUNDLE_RECORD`)
        job.json        the job spec, its paths relative to the bundle (`SPEC_NAME`)
        inputs/<field>/ the spec's files: driving clip (a video, or a sequence's frames), masks,
                        reference stills, LoRAs; copies of their own (clones where the file system can)
        output/         the job folder the farm task writes (`OUTPUT_FOLDER`): frames, manifest

`write_bundle` makes one, atomically (a hidden temporary folder renamed into place), and never
moves, changes or deletes the originals. Bundling the same spec with the same input contents again
keeps the bundle (and whatever the farm wrote into it); anything else under that name is refused.
`read_bundle` reads one back and checks that no input changed since, before any model time.

A spec's seed of -1 ("pick one") is drawn here, so that every attempt of the task, on any worker,
makes the same noise and a retried task resumes its own job folder.
"""

from __future__ import annotations

import errno
import json
import os
import re
import secrets
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import protocol

try:
    import fcntl
except ImportError:  # Windows: plain copies
    fcntl = None

from .. import __version__
from ..errors import UserError
from ..pipeline.durable import file_sha256
from ..pipeline.probe import MediaError, clip_files

BUNDLE_FORMAT = "scail2-farm-bundle/1"
BUNDLE_RECORD = "bundle.json"
SPEC_NAME = "job.json"
INPUTS_FOLDER = "inputs"
OUTPUT_FOLDER = "output"
# Bundle names become folder names, OpenJD step names and Flamenco task names.
NAME_PATTERN = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,63}")
_CLIP_FIELDS = ("driving", "driving_mask")  # a video, a folder of frames or a frame pattern


class BundleError(UserError):
    """A bundle cannot be written or read; the message is one line for the user."""


@dataclass(frozen=True)
class Bundle:
    """A bundle on disk: its folder, name and spec (paths relative to `folder`)."""

    folder: Path
    name: str
    spec: protocol.JobSpec
    record: dict
    reused: bool = False  # the same bundle was already there

    @property
    def job_dir(self) -> Path:
        return self.folder / OUTPUT_FOLDER


def check_name(name: str) -> str:
    if not NAME_PATTERN.fullmatch(name or ""):
        raise BundleError(f"bundle name {name!r} must be 1 to 64 letters, digits, '_', '.' or '-', starting "
                          "with a letter or digit")
    return name


def name_from(text: str) -> str:
    """A bundle name from a spec file's name or a label: unsafe characters become '_'."""
    name = re.sub(r"[^A-Za-z0-9_.-]+", "_", text).strip("._-")[:64]
    return name or "shot"


def read_spec(data) -> protocol.JobSpec:
    """The checked JobSpec of a parsed JSON document: a spec, or a worker request holding one under "spec"."""
    if isinstance(data, dict) and "driving" not in data and isinstance(data.get("spec"), dict):
        data = data["spec"]
    if not isinstance(data, dict):
        raise BundleError("a job spec must be a JSON object")
    try:
        return protocol.JobSpec.from_dict(data).validate()
    except (protocol.ProtocolError, TypeError, ValueError) as exc:
        raise BundleError(f"bad job spec: {exc}") from None


# -- what a spec names ----------------------------------------------------------------------------


def _spec_inputs(spec: protocol.JobSpec) -> list[tuple[str, str]]:
    """(input name, path) of every file or clip the spec reads; the name is its folder under inputs/."""
    named = [("driving", spec.driving), ("reference", spec.reference)]
    named += [(key, value) for key, value in (("driving_mask", spec.driving_mask),
                                                 ("reference_mask", spec.reference_mask)) if value]
    named += [(f"extra_reference_{i + 1}", p) for i, p in enumerate(spec.extra_references)]
    named += [(f"extra_reference_mask_{i + 1}", p) for i, p in enumerate(spec.extra_reference_masks)]
    named += [(f"lora_{i + 1}", lora["path"]) for i, lora in enumerate(spec.loras)]
    return named


def _source_files(key: str, path: str) -> tuple[list[Path], str]:
    """The files behind one input and its new path relative to the bundle."""
    what = key.replace("_", " ")
    if key in _CLIP_FIELDS:
        try:
            frames = clip_files(path, what=what)
        except MediaError as exc:
            raise BundleError(str(exc)) from None
        if frames is not None and os.path.isdir(path):
            return [Path(p) for p in frames], f"{INPUTS_FOLDER}/{key}"
        if frames is not None and not os.path.isfile(path):  # a frame pattern: its name stays a pattern
            return [Path(p) for p in frames], f"{INPUTS_FOLDER}/{key}/{os.path.basename(path)}"
    if not os.path.isfile(path):
        raise BundleError(f"{what} {'is not a file' if os.path.exists(path) else 'not found'}: {path}")
    return [Path(path)], f"{INPUTS_FOLDER}/{key}/{os.path.basename(path)}"


def _rewritten(spec: protocol.JobSpec, new_paths: dict[str, str]) -> protocol.JobSpec:
    data = spec.to_dict()
    for key in ("driving", "reference", "driving_mask", "reference_mask"):
        if data[key]:
            data[key] = new_paths[key]
    data["extra_references"] = [new_paths[f"extra_reference_{i + 1}"] for i in range(len(spec.extra_references))]
    data["extra_reference_masks"] = [new_paths[f"extra_reference_mask_{i + 1}"]
                                     for i in range(len(spec.extra_reference_masks))]
    data["loras"] = [dict(lora, path=new_paths[f"lora_{i + 1}"]) for i, lora in enumerate(spec.loras)]
    return protocol.JobSpec.from_dict(data).validate()


# -- writing ----------------------------------------------------------------------------------------


# Linux's FICLONE ioctl (_IOW(0x94, 9, int), linux/fs.h): a copy-on-write clone, which costs no space or
# time on btrfs, XFS, bcachefs and others. Python has no call for it (os.copy_file_range may or may not
# share extents), so it is asked for by number, and anything else gets a plain copy.
_FICLONE = 0x40049409


def _clone(source_fd: int, target_fd: int) -> None:
    """Make `target_fd` a copy-on-write clone of `source_fd`; OSError where the file system cannot."""
    if fcntl is None:
        raise OSError(errno.EOPNOTSUPP, "no clones on this system")
    fcntl.ioctl(target_fd, _FICLONE, source_fd)


def _place(source: Path, target: Path) -> bool:
    """Copy `source` to `target` as bytes of the bundle's own: a clone where the file system can, else a
    plain copy; whether it was cloned. Never a hard link: an editor saving over the original in place
    would change the bundle with it. The source is only read."""
    target.parent.mkdir(parents=True, exist_ok=True)
    with open(source, "rb") as src, open(target, "xb") as dst:
        try:
            _clone(src.fileno(), dst.fileno())
            cloned = True
        except OSError:  # another file system, or one without clones (ext4, tmpfs, a network share)
            cloned = False
    if not cloned:
        shutil.copyfile(source, target)  # over the empty file just made (the kernel copies, by sendfile)
    shutil.copystat(source, target)
    return cloned


@dataclass(frozen=True)
class BundlePlan:
    """A bundle checked and ready to write: its inputs found and hashed, nothing written yet."""

    name: str
    target: Path
    bundled: protocol.JobSpec  # paths relative to the bundle; the seed still -1 if the spec's was
    sources: dict  # input name -> (absolute source path, [source files])
    inputs: list  # the record's entries
    existing: Bundle | None  # the same bundle, already there


def plan_bundle(spec: protocol.JobSpec, farm_dir: Path, name: str) -> BundlePlan:
    """Check that `spec` can be bundled as `farm_dir/name`; BundleError in one line. Writes nothing."""
    check_name(name)
    target = Path(farm_dir) / name
    # 1. Every input's files and new path, hashed (the record, and whether an existing bundle is this one).
    sources, new_paths = {}, {}
    for key, path in _spec_inputs(spec):
        files, new_paths[key] = _source_files(key, path)
        sources[key] = (os.path.abspath(path), files)
    bundled = _rewritten(spec, new_paths)
    inputs = []
    for key, (source, files) in sources.items():
        base = Path(new_paths[key]) if os.path.isdir(source) else Path(new_paths[key]).parent
        inputs.append({"input": key, "source": source, "files": [
            {"path": (base / f.name).as_posix(), "bytes": f.stat().st_size, "sha256": file_sha256(f)} for f in files]})
    # 2. A bundle already there must be this one (it is kept, with the farm's results in it).
    existing = None
    if target.exists():
        existing = read_bundle(target, verify=False)
        wanted = dict(bundled.to_dict(), seed=existing.spec.seed) if spec.seed == -1 else bundled.to_dict()
        if existing.spec.to_dict() != wanted or _hashes(existing.record) != _hashes({"inputs": inputs}):
            raise BundleError(f"{target} holds another bundle; choose another name or farm folder")
    return BundlePlan(name, target, bundled, sources, inputs, existing)


def write_planned(plan: BundlePlan, input_checks: dict | None = None) -> Bundle:
    """Write a planned bundle, built in a hidden folder and renamed into place (or keep the same one).

    `input_checks`: the report of the job's input checks (`InputCheckReport.to_dict()`), kept in bundle.json."""
    if plan.existing is not None:
        return Bundle(plan.target, plan.name, plan.existing.spec, plan.existing.record, reused=True)
    bundled, farm_dir, temp = plan.bundled, plan.target.parent, None
    if bundled.seed == -1:
        seed = protocol.pick_seed()
        bundled = protocol.JobSpec.from_dict(dict(bundled.to_dict(), seed=seed))
    inputs = [dict(entry, files=[dict(f) for f in entry["files"]]) for entry in plan.inputs]
    record = {"format": BUNDLE_FORMAT, "name": plan.name, "backend_version": __version__, "spec": SPEC_NAME,
              "created": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime()), "job_dir": OUTPUT_FOLDER,
              "inputs": inputs, "input_checks": input_checks}
    try:
        farm_dir.mkdir(parents=True, exist_ok=True)
        temp = farm_dir / f".{plan.name}.partial-{secrets.token_hex(4)}"
        temp.mkdir()
        for entry in inputs:
            for record_file, source in zip(entry["files"], plan.sources[entry["input"]][1]):
                record_file["cloned"] = _place(source, temp / record_file["path"])
        (temp / OUTPUT_FOLDER).mkdir()
        _write_json(temp / SPEC_NAME, bundled.to_dict())
        _write_json(temp / BUNDLE_RECORD, record)
        os.rename(temp, plan.target)
    except OSError as exc:
        if temp is not None:
            shutil.rmtree(temp, ignore_errors=True)  # only what this call wrote
        raise BundleError(f"cannot write the bundle {plan.target}: {exc.strerror or exc}") from None
    return Bundle(plan.target, plan.name, bundled, record)


def write_bundle(spec: protocol.JobSpec, farm_dir: Path, name: str) -> Bundle:
    """Write the bundle `farm_dir/name` of `spec` (or keep the same one); BundleError in one line."""
    return write_planned(plan_bundle(spec, farm_dir, name))


def _hashes(record: dict) -> list:
    return [[(f["path"], f["sha256"]) for f in entry["files"]] for entry in record.get("inputs", [])]


def _write_json(path: Path, data: dict) -> None:
    path.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n", encoding="utf-8")


# -- reading ------------------------------------------------------------------------------------------


def _read_json(path: Path) -> dict:
    if not path.exists():
        raise BundleError(f"{path.parent} is not a SCAIL-2 farm bundle (no {path.name})")
    try:
        data = protocol.read_json_file(path)
    except protocol.ProtocolError as exc:
        raise BundleError(str(exc)) from None
    if not isinstance(data, dict):
        raise BundleError(f"{path} is damaged (not a JSON object)")
    return data


def read_bundle(folder: Path, verify: bool = True) -> Bundle:
    """The bundle in `folder`; with `verify`, every input file is checked against its recorded size and SHA-256."""
    folder = Path(folder)
    record = _read_json(folder / BUNDLE_RECORD)
    if record.get("format") != BUNDLE_FORMAT:
        raise BundleError(f"{folder / BUNDLE_RECORD} is not a {BUNDLE_FORMAT} record")
    spec = read_spec(_read_json(folder / SPEC_NAME))
    if verify:
        for entry in record.get("inputs", []):
            for item in entry.get("files", []):
                path = folder / item["path"]
                if not path.is_file():
                    raise BundleError(f"bundle {folder.name}: {item['path']} is missing; bundle the shot again")
                if path.stat().st_size != item["bytes"] or file_sha256(path) != item["sha256"]:
                    raise BundleError(f"bundle {folder.name}: {item['path']} changed since it was bundled; "
                                      "bundle the shot again")
    return Bundle(folder, str(record.get("name") or folder.name), spec, record)


def bundles_in(farm_dir: Path) -> list[Bundle]:
    """The bundles of a farm folder, by name (unverified: reading every input is the task's job)."""
    farm_dir = Path(farm_dir)
    try:
        folders = sorted(p for p in farm_dir.iterdir() if (p / BUNDLE_RECORD).is_file() and not p.name.startswith("."))
    except OSError as exc:
        raise BundleError(f"cannot read the farm folder {farm_dir}: {exc.strerror or exc}") from None
    return [read_bundle(p, verify=False) for p in folders]
