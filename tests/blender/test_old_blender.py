"""Blender releases below the minimum: a readable "needs Blender 4.5 or newer", never a traceback.

Blender 4.2 to 4.4 refuse the extension by its manifest's ``blender_version_min`` (checked in
test_manifest_build). Older ones install the zip as a legacy add-on and run its ``__init__``: that
path is checked with the real Blender 3.4 where one is on PATH (Debian 12's ``blender`` package), and
always by importing the package under a ``bpy`` that reports an old version.
"""

import os
import re
import shutil
import subprocess
import sys
import textwrap

import pytest

import blender_testing

pytestmark = pytest.mark.lts

OLD_BPY = '''
import types
app = types.SimpleNamespace(version=(4, 3, 2), version_string="4.3.2")
'''

IMPORT_AND_REGISTER = textwrap.dedent('''
    import importlib.util, sys
    spec = importlib.util.spec_from_file_location("scail2", sys.argv[1] + "/__init__.py",
                                                  submodule_search_locations=[sys.argv[1]])
    addon = importlib.util.module_from_spec(spec)
    sys.modules["scail2"] = addon
    spec.loader.exec_module(addon)
    assert addon.bl_info["blender"] == (4, 5, 0)
    loaded = sorted(name for name in sys.modules if name.startswith("scail2."))
    try:
        addon.register()
    except RuntimeError as ex:
        print("refused:", ex)
    addon.unregister()
    print("loaded:", loaded)
''')


def test_an_older_blender_is_told_in_one_line_and_runs_none_of_the_add_ons_code(tmp_path):
    (tmp_path / "bpy.py").write_text(OLD_BPY)
    run = subprocess.run([sys.executable, "-c", IMPORT_AND_REGISTER, blender_testing.REPO_ROOT],
                         env={**os.environ, "PYTHONPATH": str(tmp_path)}, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert ("refused: SCAIL-2 needs Blender 4.5 or newer; this is Blender 4.3.2. Install Blender 4.5 LTS or newer"
            in run.stdout.splitlines())
    assert "loaded: []" in run.stdout.splitlines()  # no sub-module imported: nothing that needs a newer bpy


def old_blender():
    """A Blender application below 4.5 on PATH, or None."""
    path = shutil.which("blender")
    if path is None:
        return None
    version = subprocess.run([path, "--version"], capture_output=True, text=True, timeout=120).stdout
    match = re.search(r"Blender (\d+)\.(\d+)", version)
    return path if match and (int(match[1]), int(match[2])) < (4, 5) else None


LEGACY_INSTALL = textwrap.dedent('''
    import addon_utils, bpy, sys
    bpy.ops.preferences.addon_install(filepath=sys.argv[-1])
    names = [module.__name__ for module in addon_utils.modules(refresh=True)]
    print("listed:", "scail2" in names)
    try:
        bpy.ops.preferences.addon_enable(module="scail2")
    except Exception as ex:
        print("enable:", ex)
    print("enabled:", "scail2" in bpy.context.preferences.addons)
''')


@pytest.mark.skipif(old_blender() is None, reason="no Blender below 4.5 on PATH (Debian 12: apt install blender)")
def test_blender_3_installs_the_zip_as_a_legacy_add_on_and_says_it_needs_4_5(built_zip, tmp_path):
    env = {key: value for key, value in os.environ.items() if not key.startswith("BLENDER_")}
    env.update(BLENDER_USER_CONFIG=str(tmp_path / "config"), BLENDER_USER_SCRIPTS=str(tmp_path / "scripts"))
    run = subprocess.run([old_blender(), "-b", "--factory-startup", "--python-expr", LEGACY_INSTALL, "--", built_zip],
                         env=env, capture_output=True, text=True, timeout=300)
    output = run.stdout + run.stderr
    assert "listed: True" in output, output[-3000:]
    assert "SCAIL-2 needs Blender 4.5 or newer; this is Blender 3.4" in output, output[-3000:]
    assert "enabled: False" in output, output[-3000:]
