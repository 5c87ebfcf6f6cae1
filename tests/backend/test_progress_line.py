"""A command's progress on a terminal rewrites one line; into a pipe or a file (a farm task's log) each update
is a line of its own. Real `generate` processes (tiny model), one writing to a pipe, one to a pseudo-terminal."""

from __future__ import annotations

import os
import pty
import subprocess
import sys

import pytest
from scail_fixtures import FOOTAGE, REPO

pytestmark = pytest.mark.slow  # two small generations

GENERATE = [sys.executable, "-m", "backend", "generate", "--driving", str(FOOTAGE / "scail_001_driving.mp4"),
            "--reference", str(FOOTAGE / "scail_001_ref.jpg"), "--model", "tiny", "--device", "cpu", "--end", "5",
            "--steps", "2", "--height", "32", "--width", "64", "--seed", "1"]


def test_into_a_pipe_each_step_is_a_line(tmp_path):
    run = subprocess.run([*GENERATE, "--out", str(tmp_path / "job")], cwd=REPO, capture_output=True, timeout=300)
    assert run.returncode == 0, run.stderr
    out = run.stdout.decode()  # as bytes: text mode would turn each "\r" into a newline
    assert "\r" not in out
    assert "\nsegment 1/1 step 1/2\nsegment 1/1 step 2/2\nframes and manifest: " in out, out


def test_on_a_terminal_the_steps_rewrite_one_line_and_the_next_line_starts_clean(tmp_path):
    leader, follower = pty.openpty()
    proc = subprocess.Popen([*GENERATE, "--out", str(tmp_path / "job")], cwd=REPO, stdout=follower,
                            stderr=subprocess.DEVNULL, stdin=subprocess.DEVNULL)
    os.close(follower)
    seen = b""
    while True:
        try:
            chunk = os.read(leader, 4096)
        except OSError:  # the terminal closed with the process
            break
        if not chunk:
            break
        seen += chunk
    os.close(leader)
    assert proc.wait(timeout=300) == 0
    text = seen.decode().replace("\r\n", "\n")  # the terminal turns each newline into CR LF
    assert "\rsegment 1/1 step 1/2\rsegment 1/1 step 2/2\nframes and manifest: " in text, repr(text)
