# SPDX-License-Identifier: GPL-3.0-or-later
"""Downloads of a remote worker's job folder (transfer mode), for `transfer.Transfers`.

Standard library only and no ``bpy``. A file is fetched in pieces into ``.NAME.part`` beside its
place and renamed when whole; a cut resumes at the part file's size, and a file replaced on the
worker meanwhile (its ``version`` changed) is fetched again from the start. With binary framing
several pieces are asked for before the first answer is awaited, and a folder's small files (a
job's frames) are asked for several at a time, so a round trip per file never holds the wire idle.
Pieces are written on a thread of their own while the next ones arrive, past the page cache where
the system allows (``protocol.direct_io``); a folder's fetch returns once every file is in place.
"""

import base64
import collections
import os

from .. import protocol

IN_FLIGHT = 4  # pieces (or small files) asked for before the first answer is awaited (binary framing)


class Downloads:
    """The download half of `transfer.Transfers` (which provides ``_ask``, ``_answer``, ``_forget``,
    ``_retrying``, ``_deliver``, ``jobs``, ``binary``, ``chunk_bytes``, ``counters`` and ``background``, a
    ``protocol.direct_io.BackgroundWriter``)."""

    def _sync(self, job_id):
        """Fetch what changed in a mirrored job's folder; progress events as files arrive."""
        remote, local = self.jobs[job_id]
        name = os.path.basename(remote.rstrip("/\\"))
        listed = self._retrying(lambda: self._request("list_files", job_dir=name))["files"]
        total = sum(entry["size"] for entry in listed)
        wanted, done = [], [0]
        for entry in listed:
            target = os.path.join(local, *entry["name"].split("/"))
            same = os.path.isfile(target) and os.path.getsize(target) == entry["size"]
            if same and entry["name"].startswith(("frames/", protocol.MATTE_FOLDER + "/")):
                done[0] += entry["size"]  # frames are written once: one of that size is the one
            else:
                wanted.append(entry)
        sizes = {entry["name"]: entry["size"] for entry in wanted}

        def fetched(file_name):
            done[0] += sizes[file_name]
            self._deliver(_local_progress(job_id, done[0], total))

        fetched_now = set()
        self._retrying(lambda: self._fetch_many(remote, local, [e["name"] for e in wanted], fetched_now, fetched))
        if not wanted:
            self._deliver(_local_progress(job_id, done[0], total))

    def _fetch(self, remote, local, name):
        """Fetch one file of the worker's job folder into the local one (atomically)."""
        self._retrying(lambda: self._fetch_many(remote, local, [name], set(), lambda _name: None))

    def _fetch_many(self, remote, local, names, fetched_now, on_fetched):
        """Fetch `names` (those not in `fetched_now` yet), each file's first piece asked for a few files ahead."""
        folder = os.path.basename(remote.rstrip("/\\"))
        self.background.wait_all()  # a cut attempt's writes land before part sizes are read again
        queue = iter([name for name in names if name not in fetched_now])
        asked = collections.deque()  # (name, part, request id) of first pieces asked for

        def ask_next():
            name = next(queue, None)
            if name is None:
                return False
            part = _part_of(local, name)
            offset = os.path.getsize(part) if os.path.isfile(part) else 0
            asked.append((name, part, offset, self._ask("fetch", None, job_dir=folder, name=name, offset=offset)))
            return True

        while len(asked) < (IN_FLIGHT if self.binary else 1) and ask_next():
            pass
        while asked:
            name, part, offset, request = asked.popleft()
            try:
                piece = self._answer(request, "fetch")
            except Exception:
                self._forget([item[3] for item in asked])
                raise
            version = piece["version"] if piece["size"] >= offset else None
            if version is not None:
                self._write_piece(part, piece)
            if version is None or not piece["eof"]:
                while not self._fetch_from_part(folder, name, part, version):
                    os.remove(part)  # replaced on the worker meanwhile: start again
                    version = None
            target = os.path.join(local, *name.split("/"))
            self.background.add(part, 0, b"", then=lambda part=part, target=target: os.replace(part, target))
            fetched_now.add(name)
            on_fetched(name)
            ask_next()
        self.background.wait_all()  # every file in place before the caller says so

    def _write_piece(self, part, piece):
        """Queue a piece's bytes for the writer thread, at the offset they were asked for."""
        data = _bytes_of(piece)
        self.counters["down"] += len(data)
        self.background.add(part, piece["offset"], data)

    def _fetch_from_part(self, folder, name, part, version=None):
        """Append the rest of the worker's file to ``part``, several pieces asked for at once (binary
        framing); False when the file changed on the worker meanwhile (or differs from ``version``)."""
        self.background.wait(part)  # its first piece is on disk: the part's size says where to go on
        offset = os.path.getsize(part) if os.path.isfile(part) else 0
        size = None
        asked = collections.deque()
        ask_at = offset
        while True:
            window = IN_FLIGHT if self.binary and size is not None else 1  # the first piece tells the size
            while len(asked) < window and (not asked or ask_at < size):
                asked.append(self._ask("fetch", None, job_dir=folder, name=name, offset=ask_at))
                ask_at += self.chunk_bytes
            try:
                piece = self._answer(asked.popleft(), "fetch")
            except Exception:
                self._forget(asked)
                raise
            if version is not None and piece["version"] != version or piece["size"] < offset:
                self._forget(asked)
                return False
            version, size = piece["version"], piece["size"]
            self._write_piece(part, piece)
            offset += len(_bytes_of(piece))
            if piece["eof"]:
                self._forget(asked)
                return True


def _part_of(local, name):
    target = os.path.join(local, *name.split("/"))
    os.makedirs(os.path.dirname(target), exist_ok=True)
    return os.path.join(os.path.dirname(target), "." + os.path.basename(target) + ".part")


def _bytes_of(piece):
    """A ``file_data`` reply's bytes: its binary frame's, or its base64 ``data``."""
    payload = piece.get(protocol.PAYLOAD_FIELD)
    return payload if isinstance(payload, (bytes, bytearray)) else base64.b64decode(piece.get("data") or "")


def _local_progress(job_id, done, total):
    return {"v": protocol.PROTOCOL_VERSION, "type": "progress", "job": job_id, "local": True, "phase": "download",
            "bytes": done, "total": total}
