"""The weights-hash cache: a file hashed once per version, the recipe naming weights by it, a changed file said."""

from __future__ import annotations

import hashlib
import os
import shutil
import time

from scail_fixtures import REPO

from backend.loaders import file_hashes
from backend.review.recipe import changed_weights, recipe_from_manifest

TINY = REPO / "tests" / "fixtures" / "scail2_parity" / "tiny_scail2.safetensors"


def test_a_file_is_hashed_once_per_version_and_the_cache_survives_a_new_process(tmp_path):
    weights = tmp_path / "transformer.safetensors"
    shutil.copy(TINY, weights)
    truth = hashlib.sha256(weights.read_bytes()).hexdigest()
    assert file_hashes.known_sha256(weights) is None
    assert file_hashes.hash_in_background([weights, None, weights]).join(60) is None
    assert file_hashes.known_sha256(weights) == truth
    assert file_hashes.cache_path().is_file()  # on disk: the next worker reads it
    with open(weights, "r+b") as fh:  # the same name, other bytes (another quantization copied over it)
        fh.seek(100)
        fh.write(b"\x00" * 8)
    os.utime(weights, ns=(time.time_ns(), time.time_ns() + 10**9))
    assert file_hashes.known_sha256(weights) is None  # another version: never the old file's hash
    assert file_hashes.hash_file(weights) == hashlib.sha256(weights.read_bytes()).hexdigest() != truth


def test_a_recipe_names_weights_by_their_hash_and_a_later_change_is_one_warning(tmp_path):
    weights = tmp_path / "transformer.safetensors"
    shutil.copy(TINY, weights)
    manifest = {"job": {"driving": "d.mp4", "reference": "r.png"}, "seed": 7,
                "model": {"components": {"transformer": str(weights), "vae": str(tmp_path / "vae.safetensors")}}}
    unhashed = recipe_from_manifest(manifest)
    assert [f.sha256 for f in unhashed.model] == [None, None]  # not hashed yet: named only
    file_hashes.hash_file(weights)
    recipe = recipe_from_manifest(manifest)
    roles = {f.role: f for f in recipe.model}
    assert roles["transformer"].sha256 == hashlib.sha256(TINY.read_bytes()).hexdigest()
    assert roles["vae"].sha256 is None and changed_weights(recipe) == []
    weights.write_bytes(TINY.read_bytes()[:-4] + b"abcd")
    file_hashes.hash_file(weights)
    (warning,) = changed_weights(recipe)
    assert "transformer weights" in warning and "changed since the take was made" in warning
    weights.unlink()
    assert "are gone" in changed_weights(recipe)[0]
