import os
import subprocess
import sys

import pytest

import blender_testing

# Tests import the add-on's plain modules as a package (``from scail2.core import queue``), as Blender does.
blender_testing.addon_package()


@pytest.fixture(scope="session")
def built_zip(tmp_path_factory):
    """The extension built once per session as the README says (``make extension``), as a zip path."""
    out = tmp_path_factory.mktemp("build") / "scail2.zip"
    proc = subprocess.run([sys.executable, os.path.join(blender_testing.REPO_ROOT, "packaging", "build_extension.py"),
                           str(out)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert os.path.isfile(out), proc.stdout + proc.stderr
    return str(out)
