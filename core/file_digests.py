# SPDX-License-Identifier: GPL-3.0-or-later
"""SHA-256 of input files, remembered while a file is unchanged. Standard library only, no ``bpy``.

An upload to a remote worker names each file by its SHA-256, and Redo checks a take's inputs against
the hashes its recipe recorded: both hash the same plates and stills again and again (a 2 GB plate
costs over a second each time). A digest is reused while the file's identity and change time stay
the same (device, inode, size, modification and change times in nanoseconds): any write to the file
moves its change time, which no tool can set back, and a file saved over by rename is a new inode.
"""

import collections
import hashlib
import os
import threading

REMEMBERED = 512  # files whose digest is kept (least recently used forgotten first)

_digests = collections.OrderedDict()  # (realpath, stat identity) -> hex digest
_lock = threading.Lock()


def file_identity(path):
    """What tells this version of the file at ``path`` apart from any other (OSError when it is missing)."""
    stat = os.stat(path)
    return os.path.realpath(path), (stat.st_dev, stat.st_ino, stat.st_size, stat.st_mtime_ns, stat.st_ctime_ns)


def cached_sha256(path):
    """The SHA-256 of ``path`` when it was worked out for this version of the file; None otherwise."""
    try:
        key = file_identity(path)
    except OSError:
        return None
    with _lock:
        return _digests.get(key)


def file_sha256(path):
    """The hex SHA-256 of the file at ``path`` (OSError when it cannot be read)."""
    key = file_identity(path)
    with _lock:
        digest = _digests.get(key)
        if digest is not None:
            _digests.move_to_end(key)
            return digest
    with open(path, "rb") as fh:
        digest = hashlib.file_digest(fh, "sha256").hexdigest()
    if file_identity(path) != key:  # written while it was read: the digest may be of neither version
        return digest
    with _lock:
        _digests[key] = digest
        while len(_digests) > REMEMBERED:
            _digests.popitem(last=False)
    return digest
