"""A take's recipe: what made it (inputs with SHA-256, settings, seed, model files, versions), written
into `review.json` when the take finishes, and read back by `generate --recipe` to make it again.

The job's settings and seed alone decide the frames (the noise is drawn from the seed, segment by
segment), so the same JobSpec and seed on the same machine and weights give byte-identical frames;
what can silently differ is an input file changed under the same name, so every input's SHA-256 is
compared before anything runs.
"""

from __future__ import annotations

import importlib.metadata
from pathlib import Path

from protocol import (
    MANIFEST_NAME, REVIEW_FORMAT, REVIEW_NAME, JobSpec, ProtocolError, Recipe, RecipeFile, TakeReview, read_json_file,
    read_record,
)

from .. import __version__
from ..loaders.file_hashes import known_sha256
from ..pipeline.durable import input_sha256, write_json_atomic

# JobSpec field -> the role its files play in a recipe.
SINGLE_INPUTS = (("driving", "driving"), ("reference", "reference"), ("driving_mask", "driving_mask"),
                 ("reference_mask", "reference_mask"))
LIST_INPUTS = (("extra_references", "extra_reference"), ("extra_reference_masks", "extra_reference_mask"))
VERSIONED = ("torch", "diffusers", "transformers", "numpy", "opencv-python-headless", "safetensors")


class RecipeError(ValueError):
    """A recipe that cannot be used as it is, as one line."""


def software_versions() -> dict[str, str]:
    versions = {"backend": __version__}
    for package in VERSIONED:
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            continue
    return versions


def recipe_inputs(job: dict, hashes: dict[str, str]) -> list[RecipeFile]:
    """Every input file of a JobSpec dict with its role and the SHA-256 the job recorded for it."""
    files = [RecipeFile(role, job[key], hashes.get(job[key])) for key, role in SINGLE_INPUTS if job.get(key)]
    for key, role in LIST_INPUTS:
        files += [RecipeFile(role, path, hashes.get(path)) for path in job.get(key) or []]
    files += [RecipeFile("lora", lora["path"], hashes.get(lora["path"])) for lora in job.get("loras") or []]
    return files


def recipe_from_manifest(manifest: dict, versions: dict[str, str] | None = None) -> Recipe:
    """The recipe of the take a manifest describes. Model weights carry the SHA-256 the weights-hash cache
    knows for their present version (`loaders.file_hashes`: verified at download, or hashed once by the
    worker after loading); hashing tens of GB after every take would cost minutes, so a file not hashed
    yet is named without one. LoRAs are inputs, hashed with them."""
    try:
        job, seed = dict(manifest["job"]), int(manifest["seed"])
    except (KeyError, TypeError, ValueError):
        raise RecipeError("the manifest has no job settings and seed to make a recipe from") from None
    job["seed"] = seed
    model = manifest.get("model") or {}
    components = model.get("components") or {}
    files = [RecipeFile(role, str(path), known_sha256(path)) for role, path in components.items()]
    if model.get("files") and not components:
        files.append(RecipeFile("transformer", str(model["files"][0]), known_sha256(model["files"][0])))
    if model.get("noise_only"):
        files.append(RecipeFile("tiny", "built-in tiny profile (random weights)"))
    return Recipe(job, seed, recipe_inputs(job, manifest.get("inputs") or {}), files, dict(versions or {}))


def write_take_review(job_dir: Path, manifest: dict, versions: dict[str, str] | None = None,
                      derived_from: str = "") -> bool:
    """review.json (status "new", the recipe) beside the manifest, unless one is there already (the add-on
    and the artist own it once written). Returns whether it was written."""
    path = Path(job_dir) / REVIEW_NAME
    if path.exists():
        return False
    review = TakeReview(REVIEW_FORMAT, str(manifest.get("id") or Path(job_dir).name), status="new",
                        recipe=recipe_from_manifest(manifest, versions), derived_from=derived_from)
    write_json_atomic(path, review.to_dict())
    return True


def read_recipe(path: Path) -> tuple[Recipe, str, Path]:
    """(recipe, the take's job id, its folder) from a review.json, a manifest.json, or a job folder
    holding either; RecipeError / ProtocolError in one line."""
    path = Path(path)
    if path.is_dir():
        path = path / REVIEW_NAME if (path / REVIEW_NAME).is_file() else path / MANIFEST_NAME
    if path.name == MANIFEST_NAME:
        manifest = read_json_file(path, "manifest")
        if not isinstance(manifest, dict):
            raise RecipeError(f"{path}: not a job manifest")
        return recipe_from_manifest(manifest), str(manifest.get("id") or path.parent.name), path.parent
    review = read_record(path, TakeReview)
    if review.recipe is None:
        raise RecipeError(f"{path}: this review holds no recipe; use the take's {MANIFEST_NAME} instead")
    return review.recipe, review.job_id, path.parent


def changed_inputs(recipe: Recipe) -> list[tuple[RecipeFile, str | None]]:
    """Inputs whose file is gone or hashes differently now: (the recipe's file, its SHA-256 now or None)."""
    changed = []
    for item in recipe.inputs:
        if item.sha256 is None:
            continue
        now = input_sha256(item.path)
        if now != item.sha256:
            changed.append((item, now))
    return changed


def changed_weights(recipe: Recipe) -> list[str]:
    """One line for each model file the recipe hashed that is gone, or whose present version hashed
    differently (only versions hashed already are compared: nothing is hashed here)."""
    lines = []
    for item in recipe.model:
        if item.sha256 is None:
            continue
        if not Path(item.path).is_file():
            lines.append(f"the {item.role} weights {item.path} the take was made with are gone")
        elif (now := known_sha256(item.path)) not in (None, item.sha256):
            lines.append(f"the {item.role} weights {item.path} changed since the take was made (SHA-256 "
                         f"{item.sha256[:12]}..., now {now[:12]}...): its frames will not come out the same")
    return lines


def describe_change(item: RecipeFile, now: str | None, job_id: str) -> str:
    role = item.role.replace("_", " ")
    if now is None:
        return f"the {role} {item.path} of take {job_id} is gone"
    return (f"the {role} {item.path} changed since take {job_id} was made (SHA-256 {item.sha256[:12]}..., now "
            f"{now[:12]}...)")


def spec_from_recipe(recipe: Recipe) -> JobSpec:
    """The recipe's JobSpec with the seed the take used; ProtocolError for settings no longer valid."""
    try:
        return JobSpec.from_dict({**recipe.job, "seed": recipe.seed}).validate()
    except (ProtocolError, TypeError) as exc:
        raise RecipeError(f"the recipe's settings are not a valid job: {exc}") from None


def redo_folder(take_dir: Path, job_id: str) -> Path:
    """Where a remade take goes unless --out says: beside the original, `<id>-redo`, `-redo2`, ..."""
    for n in range(1, 1000):
        folder = take_dir.parent / f"{job_id}-redo{'' if n == 1 else n}"
        if not folder.exists():
            return folder
    raise RecipeError(f"too many remakes of {job_id} beside it already; pass --out")
