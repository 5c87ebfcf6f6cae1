import os

import pytest

import blender_testing

# Tests import the add-on's plain modules as a package (``from scail2.core import queue``), as Blender does.
blender_testing.addon_package()


@pytest.fixture(scope="session")
def built_zip(tmp_path_factory):
    """The extension built once per session with Blender's own tool, as a zip path."""
    out = tmp_path_factory.mktemp("build") / "scail2.zip"
    proc = blender_testing.run_blender_ext(
        "build",
        "--source-dir", blender_testing.REPO_ROOT,
        "--output-filepath", str(out),
    )
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.isfile(out), proc.stdout + proc.stderr
    return str(out)
