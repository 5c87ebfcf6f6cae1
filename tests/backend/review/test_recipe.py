"""The review at the end of a real (tiny-profile) generation, `score`, and `generate --recipe`:
the take made again byte-identically, a changed input refused in one line, or accepted as a new take."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys

import pytest
from scail_fixtures import FOOTAGE, REPO

from backend import cli
from backend.pipeline import durable
from protocol import REVIEW_NAME, ManifestReview, TakeReview, TakeScores, read_record

SMALL = ["--height", "64", "--width", "128", "--steps", "2", "--end", "9", "--device", "cpu", "--model", "tiny"]


def generate(*args: str) -> int:
    return cli.main(["generate", *SMALL, *args])


@pytest.fixture(scope="module")
def take(tmp_path_factory):
    """A finished tiny take of the real driving clip, its reference a copy the tests may overwrite."""
    root = tmp_path_factory.mktemp("takes")
    shutil.copy(FOOTAGE / "scail_001_ref.jpg", root / "ref.jpg")
    assert generate("--driving", str(FOOTAGE / "scail_001_driving.mp4"), "--reference", str(root / "ref.jpg"),
                    "--out", str(root / "take1")) == 0
    return root / "take1"


def frames_of(job_dir) -> list[bytes]:
    manifest = json.loads((job_dir / "manifest.json").read_text())
    return [(job_dir / f["file"]).read_bytes() for f in manifest["frames"]]


def test_a_finished_take_has_its_scores_in_the_manifest_and_a_review_json(take):
    manifest = json.loads((take / "manifest.json").read_text())
    scores = ManifestReview.from_dict(manifest["review"]).scores
    assert [s.name for s in scores.scores] == ["motion", "temporal", "identity", "background", "faces"]
    assert all(len(s.per_frame) == 9 for s in scores.scores)
    assert "tiny profile" in scores.score("identity").limits  # no CLIP without real weights, said so
    review = read_record(take / REVIEW_NAME, TakeReview)
    assert review.status == "new" and review.job_id == "take1" and review.derived_from == ""
    assert review.recipe.seed == manifest["seed"] and review.recipe.job["seed"] == manifest["seed"]
    roles = {f.role: f for f in review.recipe.inputs}
    assert roles["reference"].sha256 == durable.file_sha256(take.parent / "ref.jpg")
    assert review.recipe.versions["backend"]


def test_score_rewrites_only_the_review_and_prints_json_in_a_real_process(take):
    before = json.loads((take / "manifest.json").read_text())
    done = subprocess.run([sys.executable, "-m", "backend", "score", str(take), "--json"], cwd=REPO,
                          capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, done.stderr
    printed = TakeScores.from_dict(json.loads(done.stdout))
    after = json.loads((take / "manifest.json").read_text())
    assert {k: v for k, v in after.items() if k != "review"} == {k: v for k, v in before.items() if k != "review"}
    assert ManifestReview.from_dict(after["review"]).scores == printed
    human = subprocess.run([sys.executable, "-m", "backend", "score", str(take)], cwd=REPO, capture_output=True,
                           text=True, timeout=600)
    assert human.returncode == 0 and "motion" in human.stdout and "limits:" in human.stdout


def test_score_refuses_a_folder_without_a_finished_job_in_one_line(tmp_path, capsys):
    assert cli.main(["score", str(tmp_path)]) == cli.EXIT_BAD_INPUT
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and "manifest" in err


def test_the_recipe_makes_the_take_again_byte_identically(take):
    assert generate("--recipe", str(take / REVIEW_NAME)) == 0
    again = take.parent / "take1-redo"
    assert frames_of(again) == frames_of(take)
    assert json.loads((again / "manifest.json").read_text())["seed"] == read_record(take / REVIEW_NAME,
                                                                                     TakeReview).recipe.seed


def test_a_changed_input_is_refused_in_one_line_before_any_model(take, capsys, monkeypatch):
    import backend.loaders.components

    def no_model(*args, **kwargs):
        raise AssertionError("a model was loaded for a refused recipe")

    reference = take.parent / "ref.jpg"
    original = reference.read_bytes()
    shutil.copy(FOOTAGE / "scail_002_ref.jpg", reference)
    try:
        monkeypatch.setattr(backend.loaders.components, "load_components", no_model)
        out = take.parent / "refused"
        assert generate("--recipe", str(take / "manifest.json"), "--out", str(out)) == cli.EXIT_BAD_INPUT
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: the reference ") and str(reference) in err and "\n" not in err
        assert "--accept-changed-inputs" in err and not out.exists()
        monkeypatch.undo()
        derived = take.parent / "derived"
        assert generate("--recipe", str(take / REVIEW_NAME), "--accept-changed-inputs", "--out", str(derived)) == 0
        review = read_record(derived / REVIEW_NAME, TakeReview)
        assert review.derived_from == "take1"
        assert review.recipe.inputs[1].sha256 == durable.file_sha256(reference)  # the new input's hash
        assert frames_of(derived) != frames_of(take)  # the new reference made a new take
    finally:
        reference.write_bytes(original)


def test_a_scoring_failure_is_one_warning_and_never_fails_the_job(tmp_path, capsys, monkeypatch):
    import backend.review.finish

    def broken(*args, **kwargs):
        raise RuntimeError("scorer exploded\nwith a second line")

    monkeypatch.setattr(backend.review.finish, "score_job_folder", broken)
    status = generate("--driving", str(FOOTAGE / "scail_002_driving.mp4"), "--reference",
                      str(FOOTAGE / "scail_002_ref.jpg"), "--end", "5", "--out", str(tmp_path / "t"))
    assert status == 0
    warnings = [line for line in capsys.readouterr().err.splitlines() if "not scored" in line]
    assert warnings == ["warning: the take was not scored: scorer exploded"]
    assert json.loads((tmp_path / "t" / "manifest.json").read_text()).get("review") is None  # no scores
    assert (tmp_path / "t" / REVIEW_NAME).is_file()
