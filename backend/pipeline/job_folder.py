"""A generation job's folder: whether it takes a job, who writes it now, what a killed run left.

`check_folder(folder, job)` refuses, in one line and without changing anything, a folder that
is a file, holds another job, holds a damaged manifest or state, or holds files no job wrote.
`FolderClaim` is the right to write the folder: a lock file (`LOCK_NAME`, holding the writer's
PID) that the operating system releases when the writer dies, so a killed run's lock is taken
over and a second live run is refused. While it holds the claim, a run removes the hidden
temporary files a killed run left (only names this job writes) and learns whether the last run
was interrupted. `folder_state` reads what a folder says about itself without claiming it.

Standard library only (the worker lists folders with it before torch is imported).
"""

from __future__ import annotations

import errno
import os
import re
from pathlib import Path

import protocol

from ..errors import UserError, unusable_folder

LOCK_NAME = ".scail2-job.lock"
STATE_NAME = protocol.STATE_NAME
MANIFEST_NAME = protocol.MANIFEST_NAME
FRAMES_FOLDER = "frames"
HISTORY_FOLDER = "history"  # history.HistoryStore's: the decoded tail of the newest finished segment
PREVIEW_NAME = "preview.mp4"
# The hidden temporary files `durable`'s atomic writers leave when killed mid-write (".NAME.8hex" + suffix).
_JOB_TEMP = re.compile(r"\.(state\.json|manifest\.json)\.[0-9a-f]{8}\.tmp|\.preview\.mp4\.[0-9a-f]{8}\.mp4")
_FRAME_TEMP = re.compile(r"\.frame_\d{6}\.png\.[0-9a-f]{8}\.tmp")
_HISTORY_TEMP = re.compile(r"\.segment_\d{6}\.safetensors\.[0-9a-f]{8}\.tmp")  # history.HistoryStore's
_MATTE_TEMP = re.compile(rf"{_FRAME_TEMP.pattern}|\.{re.escape(protocol.SEGMENT_RECORD)}\.[0-9a-f]{{8}}\.tmp")


# What a generation writes, by folder ("" its top): any other file there is someone else's. (Mattes are left
# out: `python -m backend matte` writes them into a job folder too.)
_TOP_FILES = re.compile(rf"{re.escape(LOCK_NAME)}|{re.escape(STATE_NAME)}|{re.escape(MANIFEST_NAME)}|"
                        rf"{re.escape(PREVIEW_NAME)}|{re.escape(protocol.REVIEW_NAME)}|{_JOB_TEMP.pattern}")
_GENERATED = {"": _TOP_FILES, FRAMES_FOLDER: re.compile(rf"frame_\d{{6}}\.png|{_FRAME_TEMP.pattern}"),
              HISTORY_FOLDER: re.compile(rf"segment_\d{{6}}\.safetensors|{_HISTORY_TEMP.pattern}")}


class JobDirectoryError(UserError):
    """The output folder cannot take this job; the message is one line for the user."""


class FolderBusy(JobDirectoryError):
    """Another live run holds the folder's lock; one line naming it."""


class OutputError(JobDirectoryError):
    """Writing the job's folder failed (read-only, disk full); the finished segments are kept."""

    code = protocol.errors.OUTPUT_ERROR


def output_error(exc: OSError, path: Path | str) -> OutputError:
    """One line for a failed write of `path`, with what to do about it."""
    reason = exc.strerror or str(exc)
    if exc.errno in (errno.ENOSPC, errno.EDQUOT):
        advice = "free some space, then run the job again: its finished segments are kept"
    elif exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        advice = "choose a folder you can write to"
    else:
        advice = "check the output folder"
    return OutputError(f"cannot write {path}: {reason}; {advice}")


def read_json_object(path: Path) -> dict | None:
    """A JSON object from `path`; None when the file is missing; JobDirectoryError when it is damaged."""
    try:
        data = protocol.read_json_file(path)
    except protocol.ProtocolError as exc:
        if not os.path.lexists(path):
            return None
        reason = str(exc).removeprefix(f"{path}: ")
        if reason.startswith("cannot be read"):
            raise JobDirectoryError(f"cannot read {path}: {reason.removeprefix('cannot be read ')}") from None
        raise JobDirectoryError(f"{path} is damaged (not JSON: {reason})") from None
    if not isinstance(data, dict):
        raise JobDirectoryError(f"{path} is damaged (not a JSON object)")
    return data


def _same_job(folder: Path, recorded, job: dict) -> bool:
    """Whether a manifest's job asks for `job`'s result (`protocol.same_job`: safety limits such as
    `max_input_pixels` do not count, settings added since take their defaults)."""
    if not isinstance(recorded, dict):
        raise JobDirectoryError(f"{folder / MANIFEST_NAME} is damaged (no job settings)")
    try:
        protocol.JobSpec.from_dict(recorded)
    except protocol.ProtocolError as exc:
        raise JobDirectoryError(f"{folder} holds a job with settings this version refuses ({exc}); choose another "
                                "output folder") from None
    return protocol.same_job(recorded, job)


def _read_or_refuse(path: Path, advice: str) -> dict | None:
    try:
        return read_json_object(path)
    except JobDirectoryError as exc:
        raise JobDirectoryError(f"{exc}; {advice}") from None


def _own_entries_only(folder: Path) -> bool:
    """Whether `folder` holds nothing but what a job writes before its manifest (lock, temp files, frames/)."""
    try:
        for entry in folder.iterdir():
            if entry.name == LOCK_NAME or _JOB_TEMP.fullmatch(entry.name):
                continue
            if entry.name == FRAMES_FOLDER and entry.is_dir() and not any(
                    not _FRAME_TEMP.fullmatch(p.name) for p in entry.iterdir()):
                continue
            return False
    except OSError as exc:
        raise JobDirectoryError(f"cannot read the output folder {folder}: {exc.strerror or exc}") from None
    return True


def check_folder(folder: Path, job: dict) -> dict | None:
    """Refuse a folder that cannot take `job` (a JobSpec dict); return its state.json (None if new).

    It takes the job when it does not exist, is empty, or holds this same job (to resume).
    Nothing is written.
    """
    folder = Path(folder)
    if not folder.exists():
        if folder.is_symlink():
            raise JobDirectoryError(f"the output folder {folder} is a broken link")
        return None
    if not folder.is_dir():
        raise JobDirectoryError(f"the output folder {folder} is a file, not a folder; choose a folder")
    manifest = _read_or_refuse(folder / MANIFEST_NAME, "choose another output folder")
    if manifest is None:
        if not _own_entries_only(folder):
            raise JobDirectoryError(f"{folder} is not empty and holds no SCAIL-2 job; choose an empty or new folder "
                                    "(nothing in it was changed)")
        return None
    if not _same_job(folder, manifest.get("job"), job):
        raise JobDirectoryError(f"{folder} holds a different job; choose another output folder")
    state = _read_or_refuse(folder / STATE_NAME, "delete it to resume from the frames on disk")
    if state is None:
        return None
    try:
        protocol.JobState.from_dict(state)
    except protocol.ProtocolError as exc:
        raise JobDirectoryError(f"{folder / STATE_NAME} {exc}; start the job in a new folder") from None
    return state


def recorded_seed(folder: Path) -> int | None:
    """The seed a folder's manifest recorded (a state.json deleted by hand keeps the job's noise)."""
    try:
        seed = (read_json_object(Path(folder) / MANIFEST_NAME) or {}).get("seed")
    except JobDirectoryError:
        return None
    return seed if protocol.is_seed(seed) else None


# -- the claim ----------------------------------------------------------------------------------


def _lock(fd: int) -> bool:
    """Take the exclusive lock of an open lock file without waiting; False when another run holds it."""
    try:
        if os.name == "nt":
            import msvcrt

            os.lseek(fd, 1 << 20, os.SEEK_SET)  # a byte past the PID, so others can still read it
            msvcrt.locking(fd, msvcrt.LK_NBLCK, 1)
            os.lseek(fd, 0, os.SEEK_SET)
        else:
            import fcntl

            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except (BlockingIOError, PermissionError):
        return False
    except OSError as exc:
        if exc.errno in (errno.EAGAIN, errno.EACCES, errno.EDEADLK):
            return False
        raise
    return True


def lock_holder(folder: Path) -> int | None:
    """The PID in a folder's lock file, or None when there is none (or it is unreadable)."""
    try:
        text = (Path(folder) / LOCK_NAME).read_text(encoding="ascii", errors="replace")
    except OSError:
        return None
    return int(text.split()[0]) if text.split() and text.split()[0].isdigit() else None


def _lock_is_held(folder: Path) -> bool:
    """Windows: whether a run holds the folder's lock, by trying it (os.kill there would end the process)."""
    try:
        fd = os.open(Path(folder) / LOCK_NAME, os.O_RDWR)
    except OSError:
        return False
    try:
        return not _lock(fd)
    finally:
        os.close(fd)  # which also lets go of the lock if the probe took it


def _alive(pid: int, folder: Path) -> bool:
    if pid == os.getpid():
        return True
    if os.name == "nt":
        return _lock_is_held(folder)
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def live_holder(folder: Path) -> int | None:
    """The PID of the live process whose lock file is in `folder` (this one included), or None."""
    holder = lock_holder(folder)
    return holder if holder is not None and _alive(holder, Path(folder)) else None


def folder_state(folder: Path) -> str | None:
    """What a job folder's state.json says, "interrupted" for a run that died while "running", None if unreadable.

    Reads only: the lock is not touched (a run starting meanwhile never sees it taken).
    """
    try:
        state = read_json_object(Path(folder) / STATE_NAME)
    except JobDirectoryError:
        return None
    status = (state or {}).get("status")
    if status == "running" and live_holder(folder) is None:
        return "interrupted"
    return status if isinstance(status, str) else None


class FolderClaim:
    """The right to write one job folder, held from `claim()` to `release()` (also a context manager)."""

    def __init__(self, folder: Path):
        self.folder = Path(folder)
        self._fd: int | None = None
        self._created: list[Path] = []
        self.interrupted = False  # the run before this one died while "running"
        self.removed_temp_files = 0

    @property
    def held(self) -> bool:
        return self._fd is not None

    def claim(self) -> FolderClaim:
        """Create the folder if needed, take its lock (one line if another live run holds it), mark
        an interrupted previous run, and remove the temporary files a killed run left."""
        if self.held:
            return self
        self._make_folder()
        path = self.folder / LOCK_NAME
        while True:
            try:
                fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o666)
            except OSError as exc:
                self._remove_created()
                raise output_error(exc, self.folder) from None
            if not _lock(fd):
                os.close(fd)
                holder = lock_holder(self.folder)
                self._remove_created()
                who = f" (PID {holder})" if holder else ""
                raise FolderBusy(f"{self.folder} is being written by another run{who}; wait for it to end "
                                        "or cancel it")
            try:
                same = os.fstat(fd).st_ino == os.stat(path).st_ino
            except FileNotFoundError:
                same = False
            if same:
                break
            os.close(fd)  # the run before released and removed this file meanwhile: lock the new one
        try:
            os.ftruncate(fd, 0)
            os.write(fd, f"{os.getpid()}\n".encode())
        except OSError as exc:
            os.close(fd)
            raise output_error(exc, self.folder) from None
        self._fd = fd
        try:
            self.interrupted = (read_json_object(self.folder / STATE_NAME) or {}).get("status") == "running"
        except JobDirectoryError:
            self.interrupted = False
        self.removed_temp_files = self._remove_temp_files()
        return self

    def release(self) -> None:
        """Give the folder up: remove the lock file (and the folder, if the claim made it and it stayed empty)."""
        if self._fd is None:
            return
        try:
            os.unlink(self.folder / LOCK_NAME)  # before closing: a run that opened it meanwhile retries
        except OSError:
            pass
        os.close(self._fd)
        self._fd = None
        self._remove_created()

    def __enter__(self) -> FolderClaim:
        return self.claim()

    def __exit__(self, *exc_info) -> None:
        self.release()

    def _make_folder(self) -> None:
        missing = []
        for parent in (self.folder, *self.folder.parents):
            if parent.exists():
                break
            missing.append(parent)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except FileExistsError:
            raise JobDirectoryError(f"the output folder {self.folder} is a file, not a folder; choose a folder") from None
        except OSError as exc:
            problem = unusable_folder(self.folder)
            if problem:
                raise OutputError(f"the output folder {self.folder} {problem}; choose a folder") from None
            raise output_error(exc, self.folder) from None
        self._created = missing  # innermost first

    def _remove_created(self) -> None:
        for folder in self._created:
            try:
                os.rmdir(folder)  # only ever an empty folder
            except OSError:
                break
        self._created = []

    def _remove_temp_files(self) -> int:
        """The hidden temporary files of this job's writers; nothing else is touched."""
        removed = 0
        for folder, pattern in ((self.folder, _JOB_TEMP), (self.folder / FRAMES_FOLDER, _FRAME_TEMP),
                                (self.folder / protocol.MATTE_FOLDER, _MATTE_TEMP),
                                (self.folder / HISTORY_FOLDER, _HISTORY_TEMP)):
            try:
                names = [entry.name for entry in os.scandir(folder) if entry.is_file(follow_symlinks=False)]
            except OSError:
                continue
            for name in names:
                if pattern.fullmatch(name):
                    try:
                        os.remove(folder / name)
                        removed += 1
                    except OSError:
                        pass
        return removed


def generated_files(folder: Path) -> tuple[list[Path], list[str]]:
    """The files in `folder` that a generation writes (its own file names, in its own subfolders), and the
    names (relative to `folder`) of everything else there, which no generation wrote: a tool that clears a
    job it made removes the first only when the second is empty. Standard library only; nothing is changed."""
    ours: list[Path] = []
    others: list[str] = []
    for sub, pattern in _GENERATED.items():
        place = folder / sub if sub else folder
        try:
            entries = list(os.scandir(place))
        except OSError:
            continue
        for entry in entries:
            if not sub and entry.name in _GENERATED and entry.is_dir(follow_symlinks=False):
                continue
            if entry.is_file(follow_symlinks=False) and pattern.fullmatch(entry.name):
                ours.append(Path(entry.path))
            else:
                others.append(f"{sub}/{entry.name}" if sub else entry.name)
    return ours, sorted(others)
