"""Build the add-on's zip: Blender's own extension builder, then every file moved under one ``scail2/`` folder.

Blender 4.2 and newer install either form (the manifest may sit one folder down). Blender 4.1 and
older install any zip as a legacy add-on and unpack it into their add-ons folder as it is: a zip with
the files at its root would scatter ``compat.py``, ``core/``... there as separate add-ons, where the
``scail2/`` folder gives one add-on that says it needs Blender 4.5.

    python packaging/build_extension.py OUT.zip              # with the bpy module of this Python
    python packaging/build_extension.py --blender blender OUT.zip
"""

from __future__ import annotations

import argparse
import glob
import importlib.util
import os
import subprocess
import sys
import tempfile
import zipfile

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
FOLDER = "scail2"


def builder_command(blender: str | None) -> list[str]:
    """How to run Blender's extension tool: through a Blender application, or the bpy module's own copy."""
    if blender:
        return [blender, "--factory-startup", "--command", "extension"]
    spec = importlib.util.find_spec("bpy")  # found, not imported: starting Blender is not needed
    if spec is None or not spec.submodule_search_locations:
        raise SystemExit(f"error: no bpy module in {sys.executable}; give --blender")
    package = list(spec.submodule_search_locations)[0]
    found = glob.glob(os.path.join(package, "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py"))
    if len(found) != 1:
        raise SystemExit(f"error: expected one blender_ext.py beside the bpy module, found {found}")
    return [sys.executable, found[0]]


def wrap(flat_zip: str, out: str) -> None:
    """Copy ``flat_zip`` to ``out`` with every entry under ``FOLDER/``, written beside it first."""
    partial = out + ".partial"
    with zipfile.ZipFile(flat_zip) as source, zipfile.ZipFile(partial, "w", zipfile.ZIP_DEFLATED) as target:
        for entry in source.infolist():
            data = source.read(entry)
            entry.filename = f"{FOLDER}/{entry.filename}"
            target.writestr(entry, data)
    os.replace(partial, out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("out", help="the zip to write")
    parser.add_argument("--blender", help="a Blender 4.2+ application (default: the bpy module of this Python)")
    args = parser.parse_args(argv)
    out = os.path.abspath(args.out)
    os.makedirs(os.path.dirname(out), exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        flat = os.path.join(tmp, "flat.zip")
        built = subprocess.run([*builder_command(args.blender), "build", "--source-dir", REPO,
                                "--output-filepath", flat], capture_output=True, text=True, cwd=REPO)
        if built.returncode != 0 or not os.path.isfile(flat):
            sys.stderr.write(built.stdout + built.stderr)
            print("error: Blender's extension builder failed (it needs Blender 4.2 or newer)", file=sys.stderr)
            return 1
        wrap(flat, out)
    print(f"built {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
