"""A job folder's files as a remote client reads them (`backend.service.job_files`): only regular files,
never through a link, on systems that open relative to a folder and (as on Windows) those that do not."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from backend.service import job_files
from backend.service.jobs import ProtocolFailure


@pytest.fixture(params=["relative", "checked"])
def opening(request, monkeypatch):
    """Both ways of opening: relative to open folders (openat), and each component lstat-checked."""
    if request.param == "checked":
        monkeypatch.setattr(job_files, "_RELATIVE_OPEN", False)
    return request.param


def job_folder(tmp_path: Path) -> Path:
    secret = tmp_path / "secret"
    (secret / "frames").mkdir(parents=True)
    (secret / "key.txt").write_text("BEGIN secret")
    folder = tmp_path / "jobs" / "job"
    (folder / "frames").mkdir(parents=True)
    (folder / "frames" / "frame_000000.png").write_bytes(b"a frame")
    (folder / "manifest.json").write_text("{}")
    (folder / "key.txt").symlink_to(secret / "key.txt")
    (folder / "linked").symlink_to(secret / "frames")
    (folder / ".scail2-job.lock").write_text("")
    os.mkfifo(folder / "frames" / "pipe.png")
    return folder


def test_only_regular_files_are_listed_and_no_linked_folder_is_entered(tmp_path):
    folder = job_folder(tmp_path)
    (folder / "frames" / "take\\1.png").write_bytes(b"a name no client can ask for back")
    listed = [name for name, _ in job_files.listed_files(str(folder))]
    assert listed == ["frames/frame_000000.png", "manifest.json"]
    assert all(job_files.relative_parts(name) for name in listed)  # each one a fetch takes
    assert list(job_files.listed_files(str(tmp_path / "gone"))) == []


def test_files_open_by_name_and_links_fifos_and_folders_do_not(tmp_path, opening):
    folder = job_folder(tmp_path)
    with job_files.FolderFiles(folder) as files:
        with files.open("frames/frame_000000.png") as fh:
            assert fh.read() == b"a frame"
        with files.open("manifest.json") as fh:
            assert fh.read() == b"{}"
        for name in ("key.txt", "linked/key.txt", "frames/pipe.png", "frames", "missing.png"):
            with pytest.raises(OSError):
                files.open(name)  # the FIFO too: refused at once, not waited on
        for name in ("../secret/key.txt", "/etc/passwd", ".scail2-job.lock", "frames/../key.txt", "", None):
            with pytest.raises(ProtocolFailure):
                files.open(name)


def test_a_folder_swapped_for_a_link_after_it_was_opened_once_is_not_followed(tmp_path, opening):
    folder = job_folder(tmp_path)
    (tmp_path / "secret" / "frames" / "frame_000001.png").write_text("BEGIN secret frame")
    with job_files.FolderFiles(folder) as files:
        files.open("frames/frame_000000.png").close()
        (folder / "frames").rename(folder / "frames_moved")
        (folder / "frames").symlink_to(tmp_path / "secret" / "frames")
        with pytest.raises(OSError):  # (openat: the folder opened before is read, not the link's target)
            files.open("frames/frame_000001.png")
