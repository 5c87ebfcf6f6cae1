"""docs/scail2-worker.service, the systemd unit of a studio's shared worker: its command line is one the real
`python -m backend` takes, the tokens file it serves is the one `tokens add` writes with the unit's
environment, and systemd itself finds nothing wrong with the unit (where `systemd-analyze` is installed)."""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from backend.cli import build_parser
from backend.service import token_commands

REPO = Path(__file__).resolve().parents[3]
UNIT = REPO / "docs" / "scail2-worker.service"


def unit_settings() -> dict[str, list[str]]:
    """The unit's settings by name (a setting may be given more than once), sections ignored."""
    settings: dict[str, list[str]] = {}
    for line in UNIT.read_text().splitlines():
        if line.strip() and not line.startswith(("#", ";", "[")):
            key, _, value = line.partition("=")
            settings.setdefault(key.strip(), []).append(value.strip())
    return settings


def exec_start() -> list[str]:
    return shlex.split(unit_settings()["ExecStart"][0])


def test_the_command_line_is_one_the_backend_takes():
    command = exec_start()
    workdir = unit_settings()["WorkingDirectory"][0]
    assert command[0] == f"{workdir}/.venvs/backend/bin/python" and command[1:3] == ["-m", "backend"]
    args = build_parser().parse_args(command[3:])  # an option misspelt here exits (SystemExit)
    assert args.command == "serve" and args.tokens and args.weights and args.jobs_root
    assert not args.listen.startswith("127."), "a studio's worker listens where the artists reach it (TLS then)"


def test_the_tokens_file_served_is_the_one_tokens_add_writes(monkeypatch):
    settings = unit_settings()
    environment = dict(item.split("=", 1) for value in settings["Environment"] for item in shlex.split(value))
    state = "/var/lib/" + settings["StateDirectory"][0]
    monkeypatch.setenv("XDG_CONFIG_HOME", environment["XDG_CONFIG_HOME"])
    args = build_parser().parse_args(exec_start()[3:])
    assert Path(args.tokens) == token_commands.default_tokens_file()
    assert Path(args.jobs_root).is_relative_to(state) and environment["HOME"] == state


@pytest.mark.skipif(shutil.which("systemd-analyze") is None, reason="systemd-analyze is not installed here")
def test_systemd_finds_nothing_wrong_with_it(tmp_path):
    """The unit as systemd reads it, its paths pointed at this checkout (systemd checks the program exists)."""
    workdir = unit_settings()["WorkingDirectory"][0]
    text = UNIT.read_text().replace(f"{workdir}/.venvs/backend/bin/python", sys.executable)
    text = text.replace(f"WorkingDirectory={workdir}", f"WorkingDirectory={REPO}")
    unit = tmp_path / UNIT.name
    unit.write_text(text)
    result = subprocess.run(["systemd-analyze", "verify", str(unit)], capture_output=True, text=True, timeout=60)
    said = [line for line in (result.stdout + result.stderr).splitlines() if line.strip()]
    assert result.returncode == 0 and not said, said
