"""`make test-blender52`: the add-on in a real Blender application (4.5 or newer; written for Debian's 5.2).

    python3 tests/blender52/run.py        # BLENDER=/path/to/blender, else `blender` on PATH, else the chroot

Which Blender: ``$BLENDER``; else ``blender`` on PATH when it is 4.5 or newer; else the Debian chroot at
``$SCAIL2_CHROOT`` (default /work/chroot-sid, see README.md), entered with ``unshare`` + ``chroot`` (root only).
Neither found: one line, "skipped: ...", exit 0. A chroot with a Blender that cannot be entered (not root, a bind
mount that fails): one line saying what failed, exit 1.

The recipe, all in background mode with a scratch user folder (nothing of the developer's Blender is read):
1. build the extension zip with ``blender --command extension build``;
2. install and enable it with ``blender --command extension install-file --enable``;
3. run ``addon_script.py`` in a new Blender: a tiny Generate (the test model, 128x64, 2 steps, 8 frames),
   imported as a strip and a camera plane, then Import Result as a strip and as a plane;
4. read its report: one line per step, exit 1 if any step failed.

In the chroot the add-on starts the worker itself, as on an artist's machine: the checkout, the fixtures, the
backend venv and the Python it was made from are bind-mounted at their own paths in a private mount namespace
(gone when Blender exits), so every path is the same on both sides.
"""

import json
import os
import re
import shlex
import shutil
import subprocess
import sys
import time

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
HERE = os.path.dirname(os.path.abspath(__file__))
FIXTURES = os.path.join(REPO, "tests", "fixtures")
FOOTAGE = os.path.join(FIXTURES, "footage", "scail_001_driving.mp4")
REFERENCE = os.path.join(FIXTURES, "footage", "scail_001_ref.jpg")
BACKEND_PYTHON = os.path.join(REPO, ".venvs", "backend", "bin", "python")
WORK = os.path.join(REPO, "build", "blender52")
MINIMUM = (4, 5)


def blender_version(command):
    """``(major, minor, patch)`` from ``blender --version``, or None when it does not run."""
    try:
        out = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=120).stdout
    except (OSError, subprocess.SubprocessError):
        return None
    return parse_version(out)


def parse_version(text):
    """``(major, minor, patch)`` from the "Blender 5.2.2" line of ``blender --version``, or None."""
    found = re.search(r"^Blender (\d+)\.(\d+)(?:\.(\d+))?", text, re.M)
    return tuple(int(v or 0) for v in found.groups()) if found else None


def venv_base_prefix(python):
    """The installation a venv's Python runs from: the folder above ``home`` (its ``bin``) in pyvenv.cfg."""
    cfg = os.path.join(os.path.dirname(os.path.dirname(python)), "pyvenv.cfg")
    with open(cfg, encoding="utf-8") as fh:
        home = dict(line.split(" = ", 1) for line in fh.read().splitlines() if " = " in line)["home"]
    return os.path.dirname(os.path.dirname(os.path.realpath(os.path.join(home, "python3"))))


def chroot_command(root, blender_env, program=("blender",)):
    """A command prefix that runs ``program`` (Blender) inside ``root`` with this checkout's paths bind-mounted.

    ``env -i``: nothing of the host's environment but ``blender_env`` reaches the chroot's Blender.
    """
    binds = [REPO, os.path.realpath(os.path.join(REPO, ".venvs")), venv_base_prefix(BACKEND_PYTHON)]
    script = ["set -e", 'mount -t proc proc "$R/proc"', 'mount --rbind /dev "$R/dev"']
    for path in binds:
        script.append('mkdir -p "$R"{0:s}; mount --bind {0:s} "$R"{0:s}'.format(shlex.quote(path)))
    script.append('exec chroot "$R" /usr/bin/env -i HOME=/root PATH=/usr/bin:/bin LANG=C.UTF-8 "$@"')
    variables = ["{:s}={:s}".format(k, v) for k, v in sorted(blender_env.items())]
    return ["unshare", "--mount", "--propagation", "private", "sh", "-c", 'R="$0"\n' + "\n".join(script),
            root, *variables, *program]


def find_blender(env, wrapper=()):
    """``(command prefix, version, where)`` of the Blender to test, or ``(None, None, why not)``.

    ``env``: the variables Blender gets (passed into the chroot); ``wrapper``: a program that starts Blender
    (``xvfb-run ...``), put in front of it, inside the chroot when it is the chroot's Blender. A chroot that has
    a Blender but cannot be entered (not root, a bind mount that fails) says what failed, never "not found".
    """
    if os.environ.get("BLENDER"):
        command = [os.environ["BLENDER"]]
        return [*wrapper, *command], blender_version(command), "$BLENDER"
    on_path = shutil.which("blender")
    if on_path:
        version = blender_version([on_path])
        if version and version[:2] >= MINIMUM:
            return [*wrapper, on_path], version, "PATH"
    root = os.environ.get("SCAIL2_CHROOT", "/work/chroot-sid")
    if not os.path.isfile(os.path.join(root, "usr", "bin", "blender")):
        return None, None, None
    if os.geteuid() != 0 or not shutil.which("unshare"):
        return None, None, "the chroot at {:s} has a Blender, but entering it needs root and unshare".format(root)
    command = chroot_command(root, env)
    try:
        proc = subprocess.run([*command, "--version"], capture_output=True, text=True, timeout=120)
    except (OSError, subprocess.SubprocessError) as ex:
        return None, None, "the chroot at {:s} could not be entered: {!s}".format(root, ex)
    version = parse_version(proc.stdout)
    if proc.returncode != 0 or version is None:
        lines = [line.strip() for line in (proc.stderr + proc.stdout).splitlines() if line.strip()]
        return None, None, "the chroot at {:s} could not start its Blender (exit {:d}): {:s}".format(
            root, proc.returncode, lines[0] if lines else "no output")
    if version[:2] < MINIMUM:
        return None, version, "the chroot at {:s} has Blender {:s}, older than 4.5".format(
            root, ".".join(map(str, version)))
    return chroot_command(root, env, (*wrapper, "blender")), version, "chroot " + root


def scratch_env(user):
    """This process's environment for Blender with all its user folders in ``user`` (made empty)."""
    if os.path.isdir(user):
        shutil.rmtree(user)
    os.makedirs(user)
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BLENDER_USER_", "BLENDER_SYSTEM_"))}
    env["BLENDER_USER_RESOURCES"] = user
    return env


def install_extension(command, env, work):
    """Build this checkout's extension zip in ``work`` and install and enable it; whether both worked."""
    zip_path = os.path.join(work, "scail2.zip")
    proc = run_step(command, ["--command", "extension", "build", "--source-dir", REPO,
                              "--output-filepath", zip_path], env, "extension build")
    if proc.returncode != 0 or not os.path.isfile(zip_path):
        return False
    proc = run_step(command, ["--command", "extension", "install-file", "-r", "user_default", "--enable",
                              zip_path], env, "extension install-file --enable")
    return proc.returncode == 0


def run_step(command, args, env, name, timeout=600):
    started = time.monotonic()
    proc = subprocess.run([*command, *args], env=env, capture_output=True, text=True, timeout=timeout)
    seconds = time.monotonic() - started
    if proc.returncode != 0:
        print("FAIL {:s} (exit {:d}, {:.1f} s)\n{:s}\n{:s}".format(
            name, proc.returncode, seconds, proc.stdout[-4000:], proc.stderr[-4000:]))
    else:
        print("ok   {:s} ({:.1f} s)".format(name, seconds))
    return proc


def main():
    started = time.monotonic()
    if os.path.isdir(WORK):
        shutil.rmtree(WORK)
    # A scratch Blender: its user folders only, no add-ons or preferences of whoever runs the test.
    user = os.path.join(WORK, "blender-user")
    env = scratch_env(user)
    command, version, where = find_blender({"BLENDER_USER_RESOURCES": user})
    if command is None and where is None:
        print("test-blender52: skipped: no Blender >= 4.5 found ($BLENDER, `blender` on PATH or a chroot at "
              "$SCAIL2_CHROOT)")
        return 0
    if command is None:
        print("test-blender52: FAIL: " + where)
        return 1
    if not version or version[:2] < MINIMUM:
        print("test-blender52: FAIL: {:s} is not Blender >= 4.5 ({!r})".format(where, version))
        return 1
    print("Blender {:s} ({:s})".format(".".join(map(str, version)), where))

    if not install_extension(command, env, WORK):
        return 1

    config, report_path = os.path.join(WORK, "config.json"), os.path.join(WORK, "report.json")
    with open(config, "w", encoding="utf-8") as fh:
        json.dump({"backend_python": BACKEND_PYTHON, "footage": FOOTAGE, "reference": REFERENCE, "work": WORK}, fh)
    proc = run_step(command, ["-b", "--python-exit-code", "1", "--python",
                              os.path.join(HERE, "addon_script.py"), "--", config, report_path], env,
                    "addon_script.py")
    if not os.path.isfile(report_path):
        print("test-blender52: FAIL: addon_script.py wrote no report")
        return 1
    with open(report_path, encoding="utf-8") as fh:
        report = json.load(fh)
    failed = 0
    for name, result in report.items():
        if not isinstance(result, dict):
            continue
        failed += not result["ok"]
        detail = result["detail"] if result["ok"] else "\n" + result["detail"]
        print("  {:s} {:s} ({:.1f} s): {}".format("ok  " if result["ok"] else "FAIL", name, result["seconds"],
                                                  detail))
    outcome = "FAIL ({:d} steps failed)".format(failed) if failed or proc.returncode else "passed"
    print("test-blender52: {:s}: Blender {:s}, Python {:s}, {:.0f} s".format(
        outcome, report["blender"], report["python"], time.monotonic() - started))
    return 1 if failed or proc.returncode else 0


if __name__ == "__main__":
    sys.exit(main())
