"""`python -m backend generate` under faults: every one a single error line (exit 2) and nothing lost.

The output folder (a file, another's files, damaged records, another run, read-only, a full
disk), frames deleted by hand, LoRA files that are none, a killed run, and the media
libraries' own log lines. The tiny model on CPU; real files, real processes where it matters.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import namespaces
import pytest
from scail_fixtures import FOOTAGE, REPO

from backend import cli
from backend.pipeline.job_folder import LOCK_NAME

pytestmark = pytest.mark.slow  # whole generations in processes of their own

DRIVING = FOOTAGE / "scail_001_driving.mp4"
REFERENCE = FOOTAGE / "scail_001_ref.jpg"
JOB_ARGS = ["--driving", str(DRIVING), "--reference", str(REFERENCE), "--model", "tiny", "--device", "cpu",
            "--height", "64", "--width", "128", "--steps", "2", "--end", "5", "--seed", "4"]


def generate(out, *extra) -> list[str]:
    return ["generate", *JOB_ARGS, "--out", str(out), *extra]


def contents(folder: Path) -> dict[str, bytes]:
    return {str(p.relative_to(folder)): p.read_bytes() for p in sorted(folder.rglob("*")) if p.is_file()}


def frames(folder: Path) -> dict[str, bytes]:
    return {name: data for name, data in contents(folder).items() if name.startswith("frames/")}


@pytest.fixture(scope="module")
def finished(tmp_path_factory) -> Path:
    """One finished 5-frame job; tests copy it."""
    out = tmp_path_factory.mktemp("finished") / "job"
    assert cli.main(generate(out)) == 0
    return out


@pytest.fixture()
def no_model(monkeypatch):
    """Fail the test if a model is loaded."""
    import backend.loaders.components

    def refuse(*args, **kwargs):
        raise AssertionError("a model was loaded")

    monkeypatch.setattr(backend.loaders.components, "load_components", refuse)


def one_error_line(capsys) -> str:
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err, err
    return err


def lock_holder(folder: Path) -> subprocess.Popen:
    """Another process that holds the folder's lock until it is killed."""
    code = textwrap.dedent(f"""
        import time
        from backend.pipeline.job_folder import FolderClaim
        FolderClaim({str(folder)!r}).claim()
        print("claimed", flush=True)
        time.sleep(120)
    """)
    process = subprocess.Popen([sys.executable, "-c", code], cwd=REPO, stdout=subprocess.PIPE, text=True)
    assert process.stdout.readline().strip() == "claimed"
    return process


# -- the output folder ----------------------------------------------------------------------------


def test_an_out_that_cannot_take_the_job_is_one_line_before_any_model_and_nothing_changes(
        finished, tmp_path, capsys, no_model):
    def copy(name: str) -> Path:
        return Path(shutil.copytree(finished, tmp_path / name))

    a_file = tmp_path / "a_file"
    a_file.write_text("mine")
    foreign = tmp_path / "foreign"
    (foreign / "frames").mkdir(parents=True)
    (foreign / "frames" / "frame_000000.png").write_bytes(b"the user's own frame")
    (foreign / "preview.mp4").write_bytes(b"the user's own preview")
    (foreign / "state.json").write_text('{"mine": true}')
    truncated_manifest, truncated_state, big_seed = copy("manifest"), copy("state"), copy("seed")
    (truncated_manifest / "manifest.json").write_text((truncated_manifest / "manifest.json").read_text()[:100])
    (truncated_state / "state.json").write_text('{"status": "do')
    state = json.loads((big_seed / "state.json").read_text())
    (big_seed / "state.json").write_text(json.dumps(state | {"seed": 2**70}))  # as an older version wrote it
    cases = {
        a_file: "is a file, not a folder",
        a_file / "job": f"the output folder {a_file / 'job'} cannot be made: {a_file} is a file, not a folder",
        foreign: "is not empty and holds no SCAIL-2 job",
        truncated_manifest: "manifest.json is damaged (not JSON",
        truncated_state: "state.json is damaged (not JSON",
        big_seed: "holds the seed 1180591620717411303424",
    }
    for out, message in cases.items():
        kept = out if out.exists() else a_file
        before = contents(kept) if kept.is_dir() else kept.read_bytes()
        assert cli.main(generate(out)) == cli.EXIT_BAD_INPUT, out
        assert message in one_error_line(capsys), out
        assert (contents(kept) if kept.is_dir() else kept.read_bytes()) == before, f"{kept} was changed"

    busy = copy("busy")
    other = lock_holder(busy)
    try:
        assert cli.main(generate(busy)) == cli.EXIT_BAD_INPUT
        assert f"is being written by another run (PID {other.pid})" in one_error_line(capsys)
    finally:
        other.kill()
        other.wait()


def test_compute_fp8_generates_where_the_device_runs_it_and_is_one_line_where_not(
        finished, tmp_path, capsys, monkeypatch):
    out = tmp_path / "fp8"
    assert cli.main(generate(out, "--compute", "fp8")) == 0, capsys.readouterr().err
    assert sorted(frames(out)) == sorted(frames(finished)) and frames(out) != frames(finished)

    import backend.loaders.components
    import backend.models.fp8_linear

    monkeypatch.setattr(backend.models.fp8_linear, "fp8_compute_support", lambda device: "no fp8 here")
    monkeypatch.setattr(backend.loaders.components, "load_components", lambda *a, **k: pytest.fail("model loaded"))
    capsys.readouterr()
    assert cli.main(generate(tmp_path / "refused", "--compute", "fp8")) == cli.EXIT_BAD_INPUT
    assert one_error_line(capsys) == "error: --compute fp8 is not available on cpu: no fp8 here"


def test_a_finished_job_whose_frames_were_deleted_makes_them_again_identically(finished, tmp_path, capsys):
    out = Path(shutil.copytree(finished, tmp_path / "job"))
    for k in (1, 3):
        (out / f"frames/frame_{k:06d}.png").unlink()
    assert cli.main(generate(out)) == 0, capsys.readouterr().err
    assert "2 frames of finished segments are missing; generating them again" in capsys.readouterr().out
    assert frames(out) == frames(finished)
    assert json.loads((out / "state.json").read_text())["status"] == "done"


def test_lora_files_are_checked_before_the_model_loads(tmp_path, capsys, no_model):
    import torch
    from safetensors.torch import save_file

    save_file({"blocks.0.self_attn.q.weight": torch.zeros(4, 4)}, tmp_path / "a_model.safetensors")
    save_file({"diffusion_model.blocks.0.self_attn.q.lora_down.weight": torch.zeros(4, 48),
               "diffusion_model.blocks.0.self_attn.q.lora_up.weight": torch.zeros(48, 4)}, tmp_path / "lora.safetensors")
    (tmp_path / "cut.safetensors").write_bytes((tmp_path / "lora.safetensors").read_bytes()[:-100])
    (tmp_path / "notes.safetensors").write_text("not a file of tensors")
    os.mkfifo(tmp_path / "pipe.safetensors")  # reading it would wait for a writer
    torch.save({"x": torch.zeros(3)}, tmp_path / "cut.pt")
    (tmp_path / "cut.pt").write_bytes((tmp_path / "cut.pt").read_bytes()[:200])
    cases = {
        "missing.safetensors": "LoRA file not found",
        "a_model.safetensors": "holds no LoRA tensors",
        "cut.safetensors": "truncated safetensors file",
        "notes.safetensors": "neither a safetensors file nor a torch checkpoint",
        "cut.pt": "truncated or corrupt torch checkpoint",
        "pipe.safetensors": "LoRA file not found",  # refused before it is opened (opening waits for a writer)
    }
    for name, message in cases.items():
        out = tmp_path / f"out_{name}"
        assert cli.main(generate(out, "--lora", str(tmp_path / name))) == cli.EXIT_BAD_INPUT, name
        assert message in one_error_line(capsys), name
        assert not out.exists(), name  # nothing was created for a job that could not run


def test_the_media_libraries_own_log_lines_never_bury_the_error(tmp_path):
    broken = tmp_path / "broken.mp4"
    broken.write_bytes(b"\x00not a video" * 100)
    env = {k: v for k, v in os.environ.items() if not k.startswith("OPENCV_")}
    run = subprocess.run([sys.executable, "-m", "backend", "generate", "--driving", str(broken), "--reference",
                          str(REFERENCE), "--out", str(tmp_path / "out"), "--model", "tiny"],
                         cwd=REPO, capture_output=True, text=True, timeout=120, env=env)
    assert run.returncode == 2
    assert run.stderr.splitlines() == [f"error: cannot decode video: {broken}"], run.stderr


# -- a killed run --------------------------------------------------------------------------------


def test_a_killed_run_is_reported_its_temp_files_removed_and_the_rerun_gives_the_same_frames(
        finished, tmp_path, capsys):
    out = tmp_path / "job"
    victim = subprocess.Popen([sys.executable, "-m", "backend", *generate(out)], cwd=REPO,
                              stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 120
        while not (out / "state.json").exists():
            assert victim.poll() is None and time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.05)
        os.kill(victim.pid, signal.SIGKILL)
    finally:
        victim.kill()
        victim.wait()
    assert json.loads((out / "state.json").read_text())["status"] == "running"
    assert (out / LOCK_NAME).exists()  # the dead run's lock, still naming its PID
    leftover = out / "frames" / ".frame_000002.png.5eed0a11.tmp"  # what a kill mid-write leaves
    leftover.write_bytes(b"half a png")

    assert cli.main(generate(out)) == 0
    assert "the last run on this folder stopped without finishing" in capsys.readouterr().out
    assert not leftover.exists() and not (out / LOCK_NAME).exists()
    assert frames(out) == frames(finished)


# -- read-only and full disks (a private mount namespace: root, or a user namespace) --------------------------


@pytest.mark.skipif(namespaces.private_mounts() is None, reason=namespaces.why_not())
def test_read_only_and_full_disks_are_one_line_and_the_job_resumes_once_space_is_freed(tmp_path):
    disk, results = tmp_path / "disk", tmp_path / "results"
    disk.mkdir()
    results.mkdir()
    command = " ".join([sys.executable, "-m", "backend", "generate", *JOB_ARGS])
    script = textwrap.dedent(f"""
        set -u
        mount -t tmpfs -o size=1m tmpfs {disk}
        mkdir {disk}/ro && mount -t tmpfs -o ro tmpfs {disk}/ro
        {command} --out {disk}/ro 2> {results}/ro.err; echo $? > {results}/ro.rc
        head -c 983040 /dev/zero > {disk}/filler  # leaves 64 kB: the manifest, the state and a frame or two
        {command} --out {disk}/job 2> {results}/full.err; echo $? > {results}/full.rc
        cp -r {disk}/job {results}/after_full
        rm {disk}/filler
        {command} --out {disk}/job 2> {results}/freed.err; echo $? > {results}/freed.rc
        cp -r {disk}/job {results}/after_freed
    """)
    subprocess.run([*namespaces.private_mounts(), "sh", "-c", script], cwd=REPO, check=True, timeout=600,
                   stdout=subprocess.DEVNULL)

    def outcome(name: str) -> tuple[int, list[str]]:
        return int((results / f"{name}.rc").read_text()), (results / f"{name}.err").read_text().splitlines()

    status, lines = outcome("ro")
    assert status == 2 and len(lines) == 1 and "Read-only file system" in lines[0], lines
    status, lines = outcome("full")
    assert status == 2 and len(lines) == 1 and "No space left on device" in lines[0], lines
    assert "free some space, then run the job again" in lines[0]
    partial = results / "after_full"
    assert json.loads((partial / "state.json").read_text())["status"] in ("failed", "running")
    assert not [p.name for p in partial.rglob(".*.tmp")]  # no half-written frame left behind
    status, lines = outcome("freed")
    assert status == 0, lines
    # The segment is made again whole: the frames written before the disk filled come out the same
    # (both runs are processes of their own; the in-process fixture may differ in the last bits).
    before, after = frames(partial), frames(results / "after_freed")
    assert before and len(after) == 5 and all(after[name] == data for name, data in before.items())


def test_a_job_whose_state_was_deleted_resumes_from_the_frames_on_disk(finished, tmp_path, capsys):
    """What the damaged-state message advises: delete state.json; the frames and the manifest's seed suffice."""
    out = Path(shutil.copytree(finished, tmp_path / "job"))
    (out / "state.json").unlink()
    assert cli.main(generate(out)) == 0, capsys.readouterr().err
    printed = capsys.readouterr().out
    assert "resuming after segment 1 of 1" in printed and "step" not in printed  # nothing generated again
    assert frames(out) == frames(finished)
    assert json.loads((out / "state.json").read_text())["seed"] == 4


@pytest.mark.parametrize("stop", [signal.SIGTERM, signal.SIGINT])
def test_a_terminated_run_records_itself_cancelled_and_the_same_command_resumes(tmp_path, stop):
    out = tmp_path / "job"
    # Enough steps that the signal lands in the middle of sampling.
    command = [sys.executable, "-m", "backend", *generate(out, "--steps", "400")]
    victim = subprocess.Popen(command, cwd=REPO, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 120
        while not (out / "state.json").exists():
            assert victim.poll() is None and time.monotonic() < deadline, "the run never started writing"
            time.sleep(0.05)
        victim.send_signal(stop)
        _, stderr = victim.communicate(timeout=60)
    finally:
        victim.kill()
        victim.wait()
    assert victim.returncode == 128 + stop, stderr
    assert stderr.strip().splitlines()[-1] == (f"stopped by {stop.name} after 0 of 1 segments; "
                                               "run the same command again to resume")
    assert "Traceback" not in stderr
    assert json.loads((out / "state.json").read_text())["status"] == "cancelled"
    assert not (out / LOCK_NAME).exists()


def test_settings_no_run_could_accept_are_refused_before_torch_is_imported(tmp_path):
    # Importing torch alone takes seconds (4-10 s was measured for such a refusal before).
    probe = textwrap.dedent(f"""
        import sys
        from backend import cli
        code = cli.main({generate(tmp_path / "job", "--steps", "0")!r})
        print(code, "torch" in sys.modules, "numpy" in sys.modules)
    """)
    run = subprocess.run([sys.executable, "-c", probe], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert run.stdout.split() == ["2", "False", "False"], run.stderr
    assert run.stderr.strip() == "error: steps must be at least 1 and at most 10000, got 0"
    assert not (tmp_path / "job").exists()


def test_device_options_that_cannot_work_stop_the_worker_at_start_in_one_line(capsys, monkeypatch):
    """`generate` refuses them before its folder is claimed (the bad-input cases of
    tests/backend/pipeline/test_generate.py, and the fp8 test above); the worker does at start, not at
    its first job's model load."""
    import backend.models.fp8_linear

    status = cli.main(["serve", "--model", "tiny", "--device", "cpu", "--attention", "flashy"])
    err = capsys.readouterr().err.strip()
    assert status == cli.EXIT_BAD_INPUT
    assert err.startswith("error: --attention flashy is not a diffusers attention backend") and "\n" not in err
    monkeypatch.setattr(backend.models.fp8_linear, "fp8_compute_support", lambda device: "no fp8 here")
    assert cli.main(["serve", "--model", "tiny", "--device", "cpu", "--compute", "fp8"]) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip() == "error: --compute fp8 is not available on cpu: no fp8 here"


def test_input_checks_that_break_are_a_note_and_the_job_still_runs(tmp_path, capsys, monkeypatch):
    import backend.input_checks.run

    def broken(*args, **kwargs):
        raise RuntimeError("a detector that could not load")

    monkeypatch.setattr(backend.input_checks.run, "run_checks", broken)
    assert cli.main(generate(tmp_path / "job")) == 0, capsys.readouterr().err
    assert "note: the input checks could not run: a detector that could not load" in capsys.readouterr().out
    assert (tmp_path / "job" / "manifest.json").is_file()


def test_a_jobs_root_that_cannot_be_used_is_one_line_saying_why_not_another_worker(tmp_path, capsys, monkeypatch):
    monkeypatch.setenv("XDG_CONFIG_HOME", str(tmp_path / "config"))
    a_file = tmp_path / "a_file"
    a_file.write_text("the user's")
    serve = ["serve", "--model", "tiny", "--device", "cpu", "--listen", "127.0.0.1:0"]
    assert cli.main([*serve, "--jobs-root", str(a_file)]) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip().splitlines()[-1] == (
        f"error: the jobs root {a_file} is a file, not a folder; give --jobs-root a folder this worker can write")
    assert cli.main([*serve, "--jobs-root", str(a_file / "jobs")]) == cli.EXIT_BAD_INPUT
    assert capsys.readouterr().err.strip().splitlines()[-1].startswith(f"error: cannot make the jobs root {a_file / 'jobs'}: ")
    assert a_file.read_text() == "the user's"


def test_a_port_already_taken_is_one_line_before_any_token_is_shown(tmp_path):
    """A process of its own: the refusal comes before a token is made and printed (a token shown "only this
    once" by a worker that then does not start would be handed out for nothing) or a certificate is made."""
    import socket

    taken = socket.create_server(("127.0.0.1", 0))
    port = taken.getsockname()[1]
    try:
        run = subprocess.run([sys.executable, "-m", "backend", "serve", "--model", "tiny", "--device", "cpu",
                              "--listen", f"127.0.0.1:{port}", "--tls"],
                             cwd=REPO, capture_output=True, text=True, timeout=60,
                             env={**os.environ, "XDG_CONFIG_HOME": str(tmp_path / "config")})
    finally:
        taken.close()
    assert run.returncode == cli.EXIT_BAD_INPUT
    assert run.stderr.strip() == f"error: cannot listen on 127.0.0.1:{port}: Address already in use"
    assert not (tmp_path / "config").exists()  # no certificate made, no token


def test_unusable_folder_names_a_file_in_the_way(tmp_path):
    from backend.errors import unusable_folder

    a_file = tmp_path / "a_file"
    a_file.write_text("x")
    assert unusable_folder(tmp_path) is None and unusable_folder(tmp_path / "new" / "deeper") is None
    assert unusable_folder(a_file) == "is a file, not a folder"
    assert unusable_folder(a_file / "x" / "y") == f"cannot be made: {a_file} is a file, not a folder"
