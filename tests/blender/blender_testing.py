"""Shared helpers for the Blender-side tests (imported by name: pytest.ini puts tests/blender on sys.path).

Nothing here imports ``bpy``: the pytest process stays free of Blender, and
everything that needs Blender runs in a child Python with isolated user folders.
"""

import glob
import importlib.util
import os
import subprocess
import sys

import namespaces
import process_guard

REPO_ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(REPO_ROOT, "tests", "fixtures")  # in the repository: a clone anywhere tests itself
FOOTAGE = os.path.join(FIXTURES, "footage", "scail_001_driving.mp4")
REFERENCE = os.path.join(FIXTURES, "footage", "scail_001_ref.jpg")
BACKEND_PYTHON = os.path.join(REPO_ROOT, ".venvs", "backend", "bin", "python")


def run_child_script(script, args, work, user_dir, extra_env=None, timeout=600):
    """Run ``script`` (a ``*_script.py`` beside this file) in a child Python with an isolated Blender user folder.

    The script writes its report (``{step: {"ok", "detail"}}``) to the JSON path that is its third argument;
    returns that report with ``_output``: the exit code and the ends of stdout and stderr, for failure messages.
    """
    import json

    report_path = args[2]
    env = dict(isolated_blender_env(str(user_dir)), **(extra_env or {}))
    proc = subprocess.run([sys.executable, os.path.join(HERE, script), *map(str, args)], env=env, cwd=str(work),
                          capture_output=True, text=True, timeout=timeout)
    output = "exit code {:d}\n--- stdout\n{:s}\n--- stderr\n{:s}".format(
        proc.returncode, proc.stdout[-6000:], proc.stderr[-4000:])
    assert os.path.isfile(report_path), output
    with open(report_path, encoding="utf-8") as fh:
        data = json.load(fh)
    data["_output"] = output
    return data


def step_detail(report, name):
    """The detail of step ``name`` of a child script's report (``run_child_script``); fails with its traceback."""
    assert name in report, "step {!r} did not run\n{:s}".format(name, report["_output"])
    result = report[name]
    assert result["ok"], "step {!r} failed:\n{:s}".format(name, result["detail"])
    return result["detail"]


def bpy_package_dir():
    """Folder of the ``bpy`` module of the running Python (found without importing it)."""
    spec = importlib.util.find_spec("bpy")
    if spec is None or not spec.submodule_search_locations:
        raise RuntimeError("bpy is not installed in " + sys.executable)
    return list(spec.submodule_search_locations)[0]


def blender_ext_cli():
    """Path of Blender's extension command line tool (``blender_ext.py``) bundled with this bpy."""
    found = glob.glob(os.path.join(
        bpy_package_dir(), "*", "scripts", "addons_core", "bl_pkg", "cli", "blender_ext.py",
    ))
    if len(found) != 1:
        raise RuntimeError("expected one blender_ext.py, found {!r}".format(found))
    return found[0]


def run_blender_ext(*args, timeout=120):
    """Run ``blender_ext.py`` with ``args``; returns the completed process."""
    return subprocess.run(
        [sys.executable, blender_ext_cli(), *args],
        capture_output=True, text=True, timeout=timeout, cwd=REPO_ROOT,
    )


ADDON_PACKAGE = "scail2"


def addon_package():
    """The add-on as the package ``scail2``, without running its ``__init__`` (which imports ``bpy``).

    Its ``core`` modules (standard library only) then import as inside Blender: ``from scail2.core import queue``.
    """
    import types

    package = sys.modules.get(ADDON_PACKAGE)
    if package is None:
        package = types.ModuleType(ADDON_PACKAGE)
        package.__path__ = [REPO_ROOT]
        package.__package__ = ADDON_PACKAGE
        sys.modules[ADDON_PACKAGE] = package
    return package


def isolated_blender_env(user_dir):
    """Environment for a child Python importing ``bpy`` with all user folders inside ``user_dir``."""
    env = {
        key: value for key, value in os.environ.items()
        if not key.startswith(("BLENDER_USER_", "BLENDER_SYSTEM_"))
    }
    env["BLENDER_USER_RESOURCES"] = user_dir
    return env


def write_executable(path, text):
    with open(path, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.chmod(path, 0o755)
    return path


# What a TLS worker prints at start that a client needs: its certificate, its token, its port.
_WORKER_START = (("fingerprint", r"fingerprint: ([0-9A-F:]{95})"), ("token", r"add-on\): (\S+)"),
                 ("port", r"listening on 127\.0\.0\.1:(\d+) with TLS"))


def sealed_tls_worker(python, sealed_dir, worker_dir):
    """``(process, {"fingerprint", "token", "port"})``: a tiny-model TLS worker on 127.0.0.1 that sees an empty
    tmpfs where ``sealed_dir`` is (a mount namespace of its own, `namespaces.private_mounts`), so it can read
    the client's files only as uploads. Its jobs root and certificate live in ``worker_dir``."""
    import re
    import threading

    serve = [python, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu", "--jobs-root",
             os.path.join(str(worker_dir), "jobs"), "--listen", "127.0.0.1:0", "--tls"]
    script = 'mount -t tmpfs sealed "$0" && test ! -e "$0/driving.mp4" && exec "$@"'
    proc = process_guard.start([*namespaces.private_mounts(), "sh", "-c", script, str(sealed_dir), *serve], cwd=REPO_ROOT,
                            stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                            env={**os.environ, "XDG_CONFIG_HOME": os.path.join(str(worker_dir), "config")})
    found = {}
    for raw in proc.stderr:
        for key, pattern in _WORKER_START:
            if match := re.search(pattern, raw.decode()):
                found[key] = match.group(1)
        if "port" in found:
            threading.Thread(target=proc.stderr.read, daemon=True).start()  # keep its pipe from filling
            break
    if len(found) != 3:
        process_guard.end(proc)
        raise AssertionError("the worker did not start: {!r} {!r}".format(found, proc.poll()))
    found["port"] = int(found["port"])
    return proc, found

