"""The tests themselves (issue 30, item 9): a clone anywhere tests itself, a missing fixture is an error,
and a worker a test starts ends with it whatever fails. Each runs pytest as a child process."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest
from scail_fixtures import REPO

TESTS = REPO / "tests"


def run_pytest(*args, cwd: Path, env: dict | None = None, timeout: float = 300) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "pytest", *map(str, args)], cwd=cwd, capture_output=True, text=True,
                          timeout=timeout, env={**os.environ, **(env or {})})


def test_no_test_or_bench_script_reads_beside_the_repository():
    """Everything a test or a bench script reads is in the repository (tests/fixtures), never ../shared."""
    offenders = []
    for folder in (TESTS, REPO / "bench"):
        for path in folder.rglob("*.py"):
            text = path.read_text(encoding="utf-8")
            if "../shared" in text.replace("\\", "/") or "SCAIL2_SHARED" in text:
                offenders.append(str(path.relative_to(REPO)))
    assert offenders == [str(Path(__file__).relative_to(REPO))]  # only this test names them


@pytest.mark.slow
def test_a_clone_with_nothing_beside_it_tests_itself(tmp_path):
    """The repository copied where no ../shared exists: a fixture-reading test passes there."""
    clone = tmp_path / "somewhere" / "clone"
    for part in ("backend", "protocol", "tests"):
        shutil.copytree(REPO / part, clone / part, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    assert not (clone.parent / "shared").exists()
    run = run_pytest("-c", "tests/pytest.ini", "-q", "-p", "no:cacheprovider", "tests/backend/pipeline/test_media.py",
                     "-k", "real_footage", cwd=clone, env={"HOME": str(tmp_path)})
    assert run.returncode == 0, run.stdout[-3000:] + run.stderr[-2000:]
    assert "3 passed" in run.stdout and "skipped" not in run.stdout


@pytest.mark.slow
def test_a_missing_fixture_is_an_error_not_a_skip(tmp_path):
    clone = tmp_path / "clone"
    for part in ("backend", "protocol", "tests"):
        shutil.copytree(REPO / part, clone / part, ignore=shutil.ignore_patterns("__pycache__", ".pytest_cache"))
    (clone / "tests" / "fixtures" / "footage" / "scail_001_ref.jpg").unlink()
    run = run_pytest("-c", "tests/pytest.ini", "-q", "-p", "no:cacheprovider", "tests/backend/pipeline/test_media.py",
                     cwd=clone)
    assert run.returncode != 0 and "passed" not in run.stdout and "skipped" not in run.stdout
    assert "missing test fixtures in" in run.stderr and "footage/scail_001_ref.jpg" in run.stderr


INNER_TEST = """
import os, signal, subprocess, sys

import process_guard

def serve(jobs, start):
    proc = start([sys.executable, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu", "--jobs-root", jobs,
                  "--listen", "127.0.0.1:0"], cwd={repo!r}, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL,
                 stderr=subprocess.PIPE)
    for raw in proc.stderr:
        if b"listening on" in raw:
            return proc
    raise AssertionError("the worker did not start")

def test_fails_with_workers_running():
    guarded = serve({jobs!r} + "/guarded", process_guard.start)
    plain = serve({jobs!r} + "/plain", subprocess.Popen)  # as the add-on's WorkerClient starts one
    with open({pids!r}, "w") as fh:
        fh.write("{{}} {{}}".format(guarded.pid, plain.pid))
    if os.environ.get("KILL_PYTEST"):
        os.kill(os.getpid(), signal.SIGKILL)
    assert False, "a test that fails with its workers running"
"""


def gone(pid: int, timeout: float = 20.0) -> bool:
    """Whether process `pid` has ended (a zombie waiting for init counts as ended)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with open(f"/proc/{pid}/stat", "rb") as fh:
                if fh.read().rsplit(b")", 1)[1].split()[0] == b"Z":
                    return True
        except FileNotFoundError:
            return True
        time.sleep(0.2)
    return False


@pytest.mark.slow
@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="reads /proc")
@pytest.mark.parametrize("how", ["a failed test", "pytest killed"])
def test_a_worker_ends_with_its_tests_whatever_fails(tmp_path, how):
    pids = tmp_path / "pids"
    (tmp_path / "inner").mkdir()
    (tmp_path / "inner" / "test_inner.py").write_text(textwrap.dedent(INNER_TEST.format(
        repo=str(REPO), jobs=str(tmp_path / "jobs"), pids=str(pids))))
    # tests/conftest.py as a plugin: the inner run has the fixture check, process_guard and the cleanup.
    run = run_pytest("-q", "-p", "conftest", "-p", "no:cacheprovider", tmp_path / "inner", cwd=tmp_path,
                     env={"PYTHONPATH": os.pathsep.join([str(REPO), str(TESTS)]),
                          "KILL_PYTEST": "1" if how == "pytest killed" else ""})
    guarded, plain = map(int, pids.read_text().split())
    try:
        if how == "a failed test":
            assert run.returncode == 1 and "1 failed" in run.stdout, run.stdout[-2000:] + run.stderr[-2000:]
            assert "ended 2 worker process(es)" in run.stdout
            assert gone(guarded) and gone(plain)
        else:
            assert run.returncode == -signal.SIGKILL
            assert gone(guarded)  # the kernel ended it with its parent (PR_SET_PDEATHSIG)
    finally:
        for pid in (guarded, plain):  # what this test started and left, if it failed
            if not gone(pid, timeout=0.5):
                os.kill(pid, signal.SIGKILL)
