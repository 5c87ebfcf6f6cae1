"""A private mount namespace for the tests that mount a tmpfs (the sealed worker, full and read-only disks).

As root `unshare -m`; otherwise a user namespace, `unshare -r -m`, where the kernel allows one (issue 30,
item 10), so these tests run on a developer's machine too. Where neither works, `why_not` says why in
one line, which the skip reason and the session's summary show (`tests/conftest.py`).
"""

import os
import shutil
import subprocess
import tempfile

_found = {}


def _probe(prefix):
    """The error of mounting a tmpfs with `prefix`, '' when it works."""
    target = tempfile.mkdtemp(prefix="scail2-mount-probe-")
    try:
        run = subprocess.run([*prefix, "sh", "-c", 'mount -t tmpfs probe "$0"', target], capture_output=True,
                             text=True, timeout=30)
    except (OSError, subprocess.TimeoutExpired) as exc:
        return str(exc)
    finally:
        os.rmdir(target)
    return "" if run.returncode == 0 else (run.stderr.strip().splitlines() or ["exit status {:d}".format(run.returncode)])[0]


def private_mounts():
    """The command prefix that runs a command in a mount namespace of its own, or None (see `why_not`)."""
    if "prefix" not in _found:
        _found["prefix"], _found["why"] = None, ""
        if os.name == "nt" or shutil.which("unshare") is None:
            _found["why"] = "no unshare command here (util-linux, Linux only)"
            return None
        tries = ([["unshare", "-m"]] if os.geteuid() == 0 else []) + [["unshare", "-r", "-m"]]
        errors = []
        for prefix in tries:
            error = _probe(prefix)
            if not error:
                _found["prefix"] = prefix
                return prefix
            errors.append("{:s}: {:s}".format(" ".join(prefix), error))
        _found["why"] = ("no private mount namespace ({:s}); user namespaces may be off "
                         "(sysctl user.max_user_namespaces, kernel.apparmor_restrict_unprivileged_userns)"
                         .format("; ".join(errors)))
    return _found["prefix"]


def why_not():
    """Why `private_mounts` found none ('' when it found one or was not asked)."""
    return _found.get("why", "")
