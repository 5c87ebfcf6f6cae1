"""Get Weights without Blender (core/weights_download.py): the command, the token, and reading the real
backend's JSON lines (`python -m backend download --dry-run --json`, which touches no network)."""

import os
import subprocess

import blender_testing
from scail2.core import weights_download
from scail2.protocol import DownloadEvent

REPO = blender_testing.REPO_ROOT


def test_the_token_goes_in_the_environment_never_on_the_command_line():
    argv = weights_download.download_command("/py", "/w", "gguf-q4", gpu_memory_gb=16, extras=("dpo",))
    assert argv == ("/py", "-m", "backend", "download", "--plan", "gguf-q4", "--to", "/w", "--json",
                    "--gpu-memory", "16", "--with", "dpo")
    assert weights_download.download_env(" hf_secret ") == {"HF_TOKEN": "hf_secret"}
    assert weights_download.download_env("") == {}


def test_the_plan_of_the_real_backend_reads_as_lines_for_the_preferences(tmp_path):
    argv = weights_download.download_command(blender_testing.BACKEND_PYTHON, str(tmp_path / "w"), "auto",
                                             gpu_memory_gb=24, dry_run=True)
    run = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=300,
                         env=dict(os.environ, HF_HOME=str(tmp_path / "hf")))
    assert run.returncode == 0, run.stderr
    view = weights_download.DownloadView(["some log line", *run.stdout.splitlines()])
    lines = view.plan_lines()
    assert lines[0].startswith("24 GB: fp8_scaled transformer, fp8 text encoder, FP8 Storage")
    assert "Fetch: diffusion_models/wan2.1_14B_SCAIL_2_fp8_scaled.safetensors (17.69 GB)" in lines
    assert lines[-1].startswith("To fetch: 26.7 GB; free disk space: ")
    assert view.progress is None and view.end is None and view.factor == 0.0


def test_progress_reads_as_mb_speed_and_time_left():
    event = DownloadEvent(event="progress", done_bytes=1_234_000_000, total_bytes=26_700_000_000,
                          speed_bps=45_200_000.0, eta_s=540.0)
    assert weights_download.progress_text(event) == "1234 of 26700 MB, 45.2 MB/s, 9 min left"
    assert weights_download.format_duration(7500) == "2 h 05 min"
    view = weights_download.DownloadView(['{"event": "progress", "done_bytes": 5, "total_bytes": 20}',
                                          '{"event": "cancelled", "message": "stopped"}'])
    assert view.factor == 0.25 and view.end.event == "cancelled"
