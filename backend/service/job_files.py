"""A job folder's files as a remote client may read them: listed, and opened, never through a link.

A transfer-mode client names files relative to a job folder under the jobs root (`transfer`). Those
names are checked here once (no parent steps, no hidden parts), and nothing under the folder is
followed when it is a link: a link put in the folder (or in place of one of its folders, even after
the folder was listed) is answered as a file that is not there. Nor is anything but a regular file
read: a FIFO opened for reading would hold the connection's thread until someone wrote to it.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path
from stat import S_ISLNK, S_ISREG
from typing import BinaryIO

from .jobs import BAD_REQUEST, ProtocolFailure

NOT_IN_FOLDER = "no such file in the job folder"
_NOFOLLOW = getattr(os, "O_NOFOLLOW", 0)
_NONBLOCK = getattr(os, "O_NONBLOCK", 0)  # opening a FIFO does not wait for a writer (then refused)
_DIRECTORY = getattr(os, "O_DIRECTORY", 0)
# Opening relative to an open folder (openat) checks each step against links as it is taken, with no
# gap between the check and the open; Windows has no such call: each step is lstat-checked there.
_RELATIVE_OPEN = os.open in os.supports_dir_fd and bool(_NOFOLLOW and _DIRECTORY)


def relative_parts(name: object) -> list[str]:
    """The components of a file's name in a job folder; refused: parent steps, hidden parts, absolute names."""
    if not isinstance(name, str) or not name or "\x00" in name or name.startswith("/") or "\\" in name:
        raise ProtocolFailure(BAD_REQUEST, "fetch needs 'name': a file of the job folder")
    parts = name.split("/")
    if any(part in ("", ".", "..") or part.startswith(".") for part in parts):
        raise ProtocolFailure(BAD_REQUEST, f"{NOT_IN_FOLDER}: {name}")
    return parts


def listed_files(folder: str, prefix: str = "") -> Iterator[tuple[str, os.stat_result]]:
    """The files under `folder`, sorted by name: (relative name, stat). Hidden names (lock and temporary
    files), names with a backslash, links and anything but regular files are left out, and no linked folder is entered.
    `os.scandir` rather than `Path.rglob`: a job's 83 files listed in 0.6 ms instead of 3.5."""
    try:
        with os.scandir(folder) as scan:
            # Names a client cannot ask for back (`relative_parts`) are not listed: one in the list failed
            # the whole folder's fetch.
            entries = sorted((entry for entry in scan if not entry.name.startswith(".") and "\\" not in entry.name),
                             key=lambda entry: entry.name)
    except OSError:  # a folder that cannot be read (or is gone): its files are not listed
        return
    for entry in entries:
        if entry.is_symlink():
            continue
        if entry.is_dir():
            yield from listed_files(entry.path, prefix + entry.name + "/")
        elif entry.is_file():
            yield prefix + entry.name, entry.stat(follow_symlinks=False)


class FolderFiles:
    """Files of one job folder (a resolved path) opened for reading. Each folder on a name's way is opened
    relative to the one above it and kept open for the next name: a job's 81 frames cost one open of
    ``frames/``, not two lstat calls each. Use as a context manager (the folders are closed after)."""

    def __init__(self, folder: Path):
        self._folder = folder
        self._folders: dict[tuple[str, ...], int] = {}  # the components of a folder -> its open descriptor

    def __enter__(self) -> FolderFiles:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    def close(self) -> None:
        for descriptor in self._folders.values():
            os.close(descriptor)
        self._folders.clear()

    def open(self, name: object) -> BinaryIO:
        """`name` opened for reading; ProtocolFailure for a bad name, OSError when no regular file of
        that name is there without a link on the way."""
        parts = relative_parts(name)
        if _RELATIVE_OPEN:
            descriptor = os.open(parts[-1], os.O_RDONLY | _NOFOLLOW | _NONBLOCK, dir_fd=self._folder_fd(tuple(parts[:-1])))
        else:
            descriptor = os.open(self._checked_path(parts), os.O_RDONLY | _NOFOLLOW | _NONBLOCK)
        try:
            if not S_ISREG(os.fstat(descriptor).st_mode):
                raise IsADirectoryError(f"{NOT_IN_FOLDER}: {name}")
            return open(descriptor, "rb")
        except BaseException:
            os.close(descriptor)
            raise

    def _folder_fd(self, parts: tuple[str, ...]) -> int:
        descriptor = self._folders.get(parts)
        if descriptor is None:
            if parts:
                descriptor = os.open(parts[-1], os.O_RDONLY | _DIRECTORY | _NOFOLLOW, dir_fd=self._folder_fd(parts[:-1]))
            else:  # the job folder itself (resolved: no link above it; itself swapped for one is refused)
                descriptor = os.open(self._folder, os.O_RDONLY | _DIRECTORY | _NOFOLLOW)
            self._folders[parts] = descriptor
        return descriptor

    def _checked_path(self, parts: list[str]) -> Path:
        """Where openat is missing: the path, each component lstat-checked (the file opened O_NOFOLLOW)."""
        path = self._folder
        for part in parts:
            path = path / part
            if S_ISLNK(path.lstat().st_mode):
                raise FileNotFoundError(f"{NOT_IN_FOLDER}: {path.name}")
        return path
