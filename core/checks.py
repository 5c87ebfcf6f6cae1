# SPDX-License-Identifier: GPL-3.0-or-later
"""Checking the SCAIL-2 backend and describing the add-on's setup.

Plain logic behind the operators and panels: standard library only (no ``bpy``),
so tests drive it without Blender.

Every message meant for the artist is a single line without a traceback,
ready for ``Operator.report``.
"""

import os
import subprocess
import time
from dataclasses import dataclass

from .util import MAX_LINE, first_line, kill_process_tree, last_line, one_line, popen_kwargs, python_env

__all__ = (
    "BackendCheck",
    "COMPONENT_LABELS",
    "ComponentLine",
    "DEFAULT_TIMEOUT_S",
    "SetupItem",
    "backend_command",
    "check_backend",
    "python_problem",
    "setup_status",
    "weights_components",
    "weights_problem",
)

# The check blocks Blender's interface while it runs, so it must stay short.
# ``python -m backend --version`` is expected to answer without loading models.
DEFAULT_TIMEOUT_S = 10.0

# Longest message handed to the interface (``util.MAX_LINE``).
MAX_MESSAGE_CHARS = MAX_LINE


@dataclass(frozen=True)
class BackendCheck:
    """Outcome of one backend check."""

    ok: bool
    """True when the backend answered with its version."""
    message: str
    """One line for the artist."""
    python: str = ""
    """The backend Python that was checked (as given)."""
    version: str = ""
    """What the backend printed for ``--version`` (only when ``ok``)."""
    seconds: float = 0.0
    """How long the backend took to answer."""


@dataclass(frozen=True)
class SetupItem:
    """One line of the setup summary shown in the panels."""

    label: str
    """What is described, e.g. "Python"."""
    value: str
    """Its current value or problem, e.g. a path or "Not set"."""
    state: str
    """``'OK'``, ``'DEFAULT'`` (nothing set, a default applies) or ``'PROBLEM'``."""


def python_problem(python):
    """Return why ``python`` cannot be used as the backend Python, or "" when it looks usable.

    Only the file system is looked at; nothing is run.
    """
    if not python.strip():
        return "Backend Python is not set: choose it in the SCAIL-2 add-on preferences"
    if not os.path.exists(python):
        return "Backend Python not found: {:s}".format(python)
    if os.path.isdir(python):
        return "Backend Python is a folder, choose the Python program inside it: {:s}".format(python)
    if os.name != "nt" and not os.access(python, os.X_OK):
        return "Backend Python is not an executable program: {:s}".format(python)
    return ""


def weights_problem(weights_dir):
    """Return why ``weights_dir`` cannot hold the model weights, or "" when it is a folder."""
    if not weights_dir.strip():
        return "Weights folder is not set: choose it in the SCAIL-2 add-on preferences"
    if not os.path.isdir(weights_dir):
        return "Weights folder not found: {:s}".format(weights_dir)
    return ""


def backend_command(python):
    """The command line that asks the backend for its version."""
    return [python, "-m", "backend", "--version"]


def check_backend(python, cwd, timeout=DEFAULT_TIMEOUT_S):
    """Run ``<python> -m backend --version`` in ``cwd`` and describe the outcome.

    ``cwd`` is the add-on's own folder, which holds the ``backend`` package.
    Never raises for problems with the backend itself and never runs longer
    than about ``timeout`` seconds: the backend and its children are killed
    once the time is up.
    """
    problem = python_problem(python)
    if problem:
        return BackendCheck(ok=False, message=one_line(problem), python=python)

    start = time.monotonic()
    try:
        proc = subprocess.Popen(
            backend_command(python),
            cwd=cwd,
            env=python_env(),
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            **popen_kwargs(),
        )
    except OSError as ex:
        reason = ex.strerror or str(ex)
        return BackendCheck(
            ok=False,
            message=one_line("Could not start backend Python ({:s}): {:s}".format(reason, python)),
            python=python,
        )

    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        kill_process_tree(proc)
        try:
            proc.communicate(timeout=2.0)
        except (subprocess.TimeoutExpired, OSError, ValueError):
            pass
        return BackendCheck(
            ok=False,
            message=one_line(
                "Backend did not answer within {:g} s and was stopped: {:s}".format(timeout, python)
            ),
            python=python,
            seconds=time.monotonic() - start,
        )
    seconds = time.monotonic() - start

    out = out.decode("utf-8", errors="replace")
    err = err.decode("utf-8", errors="replace")

    if proc.returncode != 0:
        detail = last_line(err) or last_line(out) or "no error message"
        return BackendCheck(
            ok=False,
            message=one_line("Backend check failed (exit code {:d}): {:s}".format(proc.returncode, detail)),
            python=python,
            seconds=seconds,
        )

    version = one_line(first_line(out), limit=80)
    if not version:
        return BackendCheck(
            ok=False,
            message="Backend answered without a version",
            python=python,
            seconds=seconds,
        )
    return BackendCheck(
        ok=True,
        message=one_line("Backend ready: {:s}".format(version)),
        python=python,
        version=version,
        seconds=seconds,
    )


def setup_status(python, weights_dir, output_dir, output_is_default, weights_elsewhere=""):
    """Summarize the setup as a list of :class:`SetupItem`, one per setting.

    ``weights_elsewhere``: why this computer's weights folder is not used (the Test Model, a remote worker), or
    "" when it is: then an empty folder is not a problem.
    """
    items = []

    if not python.strip():
        items.append(SetupItem("Python", "Not set", 'PROBLEM'))
    elif python_problem(python):
        items.append(SetupItem("Python", "Not found: " + python, 'PROBLEM'))
    else:
        items.append(SetupItem("Python", python, 'OK'))

    if weights_elsewhere:
        items.append(SetupItem("Weights", weights_elsewhere, 'DEFAULT'))
    elif not weights_dir.strip():
        items.append(SetupItem("Weights", "Not set", 'PROBLEM'))
    elif weights_problem(weights_dir):
        items.append(SetupItem("Weights", "Not found: " + weights_dir, 'PROBLEM'))
    else:
        items.append(SetupItem("Weights", weights_dir, 'OK'))

    items.append(SetupItem("Output", output_dir, 'DEFAULT' if output_is_default else 'OK'))
    return items


# --------------------------------------------------------------------------------------------
# The weights check: the per-component part of ``backend doctor``'s report.
COMPONENT_LABELS = ("transformer", "text encoder", "tokenizer", "image encoder", "vae", "loras")
"""The parts ``backend doctor`` lists under "per component", in its order."""

_COMPONENTS_HEADER = "per component"
_PROBLEMS = ("MISSING", "REFUSED", "TRUNCATED", "DAMAGED", "EMPTY", "UNSUPPORTED")


@dataclass(frozen=True)
class ComponentLine:
    """One part of SCAIL-2 in the weights check: the file it is read from, or what is wrong."""

    label: str
    """The part, e.g. "text encoder"."""
    value: str
    """The doctor's line: the chosen file, how it is stored and why; or the problem."""
    state: str
    """``'OK'`` or ``'PROBLEM'`` (missing, refused, truncated, ...)."""
    notes: tuple = ()
    """The lines below it: files skipped and why, the transformer's quantisation."""

    @property
    def short(self):
        """A few words for a narrow panel: the file's name and how it is stored, or the problem."""
        if self.state != 'OK':
            return one_line(self.value, limit=70)
        if self.label == "loras":
            return self.value.split(":", 1)[0]
        path, _, rest = self.value.partition(" (")
        path = path.split(": ", 1)[0]
        stored = rest.split(")", 1)[0].split(",", 1)[0] if rest else ""
        name = os.path.basename(path.rstrip("/\\")) or path
        return "{:s} ({:s})".format(name, stored) if stored else name


def weights_components(lines):
    """The parts listed by a ``backend doctor`` text report (its output ``lines``), in order.

    Each part's line starts with two spaces and its label; lines indented further belong to it.
    Returns [] when the report has no per-component section (an older backend, or no folder).
    """
    lines = [line.rstrip("\r\n") for line in lines]
    start = next((i for i, line in enumerate(lines) if line.strip().startswith(_COMPONENTS_HEADER)), None)
    if start is None:
        return []
    found = []
    for line in lines[start + 1:]:
        if not line.startswith("  "):
            break
        text = line.strip()
        label = next((name for name in COMPONENT_LABELS if text.startswith(name + ":")), None)
        if label is not None and not line.startswith("   "):
            value = text[len(label) + 1:].strip()
            state = 'PROBLEM' if value.startswith(_PROBLEMS) else 'OK'
            found.append(ComponentLine(label, value, state))
        elif found and line.startswith("   "):
            last = found[-1]
            found[-1] = ComponentLine(last.label, last.value, last.state, last.notes + (text,))
        else:
            break
    return found
