"""`python -m backend tokens` as a studio's system administrator runs it (real subprocesses): a token is
printed once and only its hash kept, names are checked before anything is made, adds run at once by a
script all land, and `serve --tokens` stops in one line on a tokens file that is not there and says so
when the file names nobody yet."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from scail_fixtures import REPO

from backend.service.identities import TokenBook, read_entries


def tokens(path: Path, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "backend", "tokens", "--file", str(path), *args], cwd=REPO,
                          capture_output=True, text=True, timeout=120)


def test_add_prints_the_token_once_keeps_its_hash_and_the_worker_knows_it(tmp_path):
    path = tmp_path / "studio" / "tokens"
    added = tokens(path, "add", "alice")
    token = added.stdout.strip()
    assert added.returncode == 0 and len(token) >= 40 and "shown only this once" in added.stderr
    assert token not in path.read_text() and TokenBook(path).identify(token).name == "alice"
    again = tokens(path, "add", "alice")
    assert again.returncode == 2 and again.stderr.startswith("error: alice has a token already")
    replaced = tokens(path, "add", "alice", "--replace", "--admin")
    assert replaced.returncode == 0 and TokenBook(path).identify(token) is None
    assert TokenBook(path).identify(replaced.stdout.strip()).admin
    listed = tokens(path, "list")
    assert listed.stdout == "alice\tadmin\n" and replaced.stdout.strip() not in listed.stdout
    assert tokens(path, "revoke", "alice").returncode == 0 and read_entries(path) == {}
    gone = tokens(path, "revoke", "alice")
    assert gone.returncode == 2 and gone.stderr == f"error: alice has no token in {path}\n"


def test_a_bad_name_is_one_line_and_makes_nothing(tmp_path):
    path = tmp_path / "not-yet" / "tokens"
    refused = tokens(path, "add", "bob smith")
    assert refused.returncode == 2 and refused.stdout == "" and len(refused.stderr.splitlines()) == 1
    assert "an artist's name is" in refused.stderr and not path.parent.exists()


def test_adds_run_at_once_all_land_in_the_file(tmp_path):
    """A script adding a team in parallel: each printed token is one the file knows (without the lock, each
    add wrote the file as it had read it, and most of the printed tokens were in no file)."""
    path = tmp_path / "tokens"
    names = [f"artist{k}" for k in range(8)]
    with ThreadPoolExecutor(len(names)) as pool:
        results = list(pool.map(lambda name: tokens(path, "add", name), names))
    assert all(result.returncode == 0 for result in results), [r.stderr for r in results]
    assert sorted(read_entries(path)) == sorted(names)
    book = TokenBook(path)
    assert [book.identify(result.stdout.strip()).name for result in results] == names


def test_an_add_while_an_editor_saves_the_file_waits_for_the_save_and_keeps_every_artist(tmp_path):
    """An editor saving in place empties the file first: an `add` that read it then wrote back one artist."""
    path = tmp_path / "tokens"
    for name in ("alice", "bob"):
        assert tokens(path, "add", name).returncode == 0
    whole = path.read_text()
    saving = threading.Event()

    def editor() -> None:
        with open(path, "w"):
            saving.set()
        until = time.monotonic() + 3.0  # a slow save: the add starts and reads in the middle of it
        while time.monotonic() < until:
            with open(path, "w"):  # still empty, still being written
                time.sleep(0.05)
        path.write_text(whole)

    saver = threading.Thread(target=editor)
    saver.start()
    saving.wait(10)
    added = tokens(path, "add", "carol")
    saver.join()
    assert added.returncode == 0, added.stderr
    assert sorted(read_entries(path)) == ["alice", "bob", "carol"]
    assert TokenBook(path).identify(added.stdout.strip()).name == "carol"


def test_serve_with_a_tokens_file_that_is_not_there_stops_in_one_line(tmp_path):
    missing = tmp_path / "tokens-typo"
    result = subprocess.run(
        [sys.executable, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu", "--jobs-root",
         str(tmp_path / "jobs"), "--listen", "127.0.0.1:0", "--tokens", str(missing)],
        cwd=REPO, capture_output=True, text=True, timeout=120)
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr == (f"error: no tokens file at {missing}: add an artist first with "
                             f"`python -m backend tokens --file {missing} add NAME`\n")
    assert not missing.exists()


def test_serve_says_when_the_tokens_file_names_nobody_yet(tmp_path):
    path = tmp_path / "tokens"
    assert tokens(path, "add", "alice").returncode == 0 and tokens(path, "revoke", "alice").returncode == 0
    proc = subprocess.Popen(
        [sys.executable, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu", "--jobs-root",
         str(tmp_path / "jobs"), "--listen", "127.0.0.1:0", "--tokens", str(path)],
        cwd=REPO, stdin=subprocess.DEVNULL, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr.readline() for _ in range(2)), daemon=True)
    reader.start()
    reader.join(60)  # the worker says both at start, or never
    proc.terminate()
    proc.wait(60)
    assert len(lines) == 2 and "listening on 127.0.0.1:" in lines[0] and "(token required)" in lines[0]
    assert f"the tokens file {path} names no artist yet: nobody can connect" in lines[1]
