"""The manifest is valid for Blender's extension tool and the built zip holds the right files."""

import zipfile

import pytest

import blender_testing

pytestmark = pytest.mark.lts


def test_manifest_validates():
    proc = blender_testing.run_blender_ext("validate", blender_testing.REPO_ROOT)
    assert proc.returncode == 0, proc.stdout + proc.stderr


@pytest.fixture(scope="module")
def zip_names(built_zip):
    with zipfile.ZipFile(built_zip) as zf:
        names = zf.namelist()
    # Everything under one folder: Blender 4.1 and older unpack a zip into their add-ons folder as it is.
    assert all(name.startswith("scail2/") for name in names), [n for n in names if not n.startswith("scail2/")]
    return [name[len("scail2/"):] for name in names]


@pytest.mark.parametrize("name", [
    "blender_manifest.toml",
    "__init__.py",
    "compat.py",
    "preferences.py",
    "protocol/__init__.py",
    "operators/__init__.py",
    "panels/__init__.py",
    "backend/__init__.py",
])
def test_zip_contains(zip_names, name):
    assert name in zip_names


@pytest.mark.parametrize("prefix", [
    "tests/",
    ".venvs/",
    ".git/",
    ".ci/",
    ".pytest_cache/",
    "bench/",
    "demo/",
    "docs/",
    "packaging/",
    "build/",
])
def test_zip_leaves_out_folder(zip_names, prefix):
    assert not [name for name in zip_names if name.startswith(prefix)]


def test_zip_leaves_out_dev_files(zip_names):
    unwanted = {"Makefile", "pytest.ini", ".gitignore"}
    assert not unwanted.intersection(zip_names)
    assert not [n for n in zip_names if "__pycache__/" in n or n.endswith((".pyc", ".zip"))]
    assert not [n for n in zip_names if n.startswith("requirements/blender")]


def test_zip_validates(built_zip):
    proc = blender_testing.run_blender_ext("validate", built_zip)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_bl_info_for_older_blenders_agrees_with_the_manifest():
    import ast
    import os
    import tomllib

    with open(os.path.join(blender_testing.REPO_ROOT, "blender_manifest.toml"), "rb") as fh:
        manifest = tomllib.load(fh)
    with open(os.path.join(blender_testing.REPO_ROOT, "__init__.py"), encoding="utf-8") as fh:
        tree = ast.parse(fh.read())
    (bl_info,) = [ast.literal_eval(node.value) for node in tree.body
                  if isinstance(node, ast.Assign) and getattr(node.targets[0], "id", "") == "bl_info"]
    assert bl_info["name"] == manifest["name"]
    assert ".".join(map(str, bl_info["version"])) == manifest["version"]
    assert ".".join(map(str, bl_info["blender"])) == manifest["blender_version_min"]
