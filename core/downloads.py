# SPDX-License-Identifier: GPL-3.0-or-later
"""Downloads of a remote worker's job folder (transfer mode), for `transfer.Transfers`.

Standard library only and no ``bpy``. A file is fetched in pieces into ``.NAME.part`` beside its
place and renamed when whole; a cut resumes at the part file's size. A worker that takes
``fetch_changed`` is told what is held here (frames already fetched, part files begun), lists the
folder and sends what changed back to back, all in one request (a job's 81 frames: one round trip,
not 82). One that takes ``fetch_files`` is asked for its listing first, then for the files wanted
in one request. With an older worker each file is asked for on its own (``fetch``): with binary
framing several pieces are asked for before the first answer is awaited, and a folder's small files
several at a time, and a file replaced on the worker meanwhile (its ``version`` changed) is fetched
again from the start.
Pieces are written on a thread of their own while the next ones arrive, past the page cache where
the system allows (``protocol.direct_io``); on a machine with few cores a small file is written by the
thread that received it (`WritesHere`). A folder's fetch returns once every file is in place.
"""

import base64
import collections
import os
import threading
import time

from .. import protocol
from ..protocol import direct_io

IN_FLIGHT = 4  # pieces (or small files) asked for before the first answer is awaited (binary framing)
FILES_PER_REQUEST = 4096  # files one fetch_files asks for (its line stays far below the worker's 1 MiB)
MAX_HELD = 8192  # files a fetch_changed names as held or begun (its line stays below the worker's 1 MiB)


class TransferError(RuntimeError):
    """A transfer that cannot be done; one line."""


class Downloads:
    """The download half of `transfer.Transfers` (which provides ``_ask``, ``_answer``, ``_forget``,
    ``_retrying``, ``_deliver``, ``jobs``, ``binary``, ``fetch_files``, ``fetch_changed``, ``chunk_bytes``,
    ``counters``, ``write_files_here`` and ``background``, a ``protocol.direct_io.BackgroundWriter``)."""

    def _sync(self, job_id):
        """Fetch what changed in a mirrored job's folder; progress events as files arrive."""
        remote, local = self.jobs[job_id]
        progress = Progress(job_id, self._deliver)
        fetched_now = set()
        if self.fetch_changed:
            self._retrying(lambda: self._fetch_changed(remote, local, progress, fetched_now))
        else:
            listed = self._retrying(lambda: self._request("list_files", job_dir=_folder_of(remote)))["files"]
            wanted = progress.plan(listed, _held(_local_sizes(local), fetched_now))
            self._retrying(lambda: self._fetch_many(remote, local, wanted, fetched_now, progress.fetched))
        progress.finish()

    def _fetch_changed(self, remote, local, progress, fetched_now):
        """One ``fetch_changed``: the worker lists the folder and sends what is not held here (the listing
        reaches the `FileStream` first, which works out the same names the worker sends)."""
        folder = _folder_of(remote)
        self.background.wait_all()  # a cut attempt's writes land before sizes are read again
        sizes = _local_sizes(local)
        held = _held(sizes, fetched_now)
        parts = {name: size for name, size in ((_name_of_part(key), size) for key, size in sizes.items()) if name}
        if len(held) + len(parts) > MAX_HELD:  # its request's line would grow past what a worker reads
            listed = self._request("list_files", job_dir=folder)["files"]
            self._fetch_many(remote, local, progress.plan(listed, held), fetched_now, progress.fetched)
            return

        def plan(listed):
            names = progress.plan(listed, held)
            return names, [parts.get(name, 0) for name in names]

        def fetched(name):
            fetched_now.add(name)
            progress.fetched(name)

        self._stream(FileStream(self, local, fetched, plan=plan), "fetch_changed", job_dir=folder,
                     have=[{"name": name, "size": size} for name, size in held.items()],
                     parts=[{"name": name, "offset": offset} for name, offset in parts.items()])

    def _fetch(self, remote, local, name):
        """Fetch one file of the worker's job folder into the local one (atomically)."""
        self._retrying(lambda: self._fetch_many(remote, local, [name], set(), lambda _name: None))

    def _fetch_many(self, remote, local, names, fetched_now, on_fetched):
        """Fetch `names` (those not in `fetched_now` yet), each file's first piece asked for a few files ahead."""
        folder = _folder_of(remote)
        self.background.wait_all()  # a cut attempt's writes land before part sizes are read again
        names = [name for name in names if name not in fetched_now]
        if self.fetch_files:
            for start in range(0, len(names), FILES_PER_REQUEST):
                self._fetch_streamed(folder, local, names[start:start + FILES_PER_REQUEST], fetched_now, on_fetched)
            return
        queue = iter(names)
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

    def _fetch_streamed(self, folder, local, names, fetched_now, on_fetched):
        """Fetch `names` with one ``fetch_files``; its pieces go to a `FileStream` on the socket's thread."""
        have = _local_sizes(local)
        offsets = [have.get(_part_name(name), 0) for name in names]

        def fetched(name):
            fetched_now.add(name)
            on_fetched(name)

        stream = FileStream(self, local, fetched, names, offsets)
        self._stream(stream, "fetch_files", job_dir=folder,
                     files=[{"name": name, "offset": offset} for name, offset in zip(names, offsets)])

    def _stream(self, stream, kind, **fields):
        """Send a request whose replies go to ``stream``; return once its files are in place."""
        request = self._ask(kind, None, stream=stream, **fields)
        try:
            self._answer(request, kind, heard=lambda: stream.last_heard)  # the ok after the last file
        except BaseException:
            self._forget([request])
            raise
        finally:
            stream.close()
        if stream.failure is not None:
            raise stream.failure
        if stream.due is not None:
            raise TransferError("the worker's answer ended before {:s}".format(stream.due))
        self.background.wait_all()  # every file in place before the caller says so

    def _write_piece(self, part, piece, then=None):
        """Queue a piece's bytes for the writer thread, at the offset they were asked for."""
        data = _bytes_of(piece)
        self.counters["down"] += len(data)
        self.background.add(part, piece["offset"], data, then=then)

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


class FileStream:
    """The receiving end of one ``fetch_files`` or ``fetch_changed`` reply: every file_data piece is taken on
    the connection's reading thread as it arrives and queued for the writer thread at once (or a small
    file written there and then: `WritesHere`), the file renamed into place after its last piece. Nothing
    waits in between: a hand-over to the transfer thread per piece cost more than the piece's bytes on
    the wire, and the writer's full queue holds the socket (and so the worker) back when the disk is the
    slower end."""

    def __init__(self, downloads, local, fetched, names=(), offsets=(), plan=None):
        self._downloads, self._local, self._fetched = downloads, local, fetched
        self._plan = plan  # a fetch_changed reply's: its listing -> (names, offsets) of the files that follow
        self._expect(names, offsets)
        self._lock = threading.Lock()
        self.position = 0  # the file the next piece belongs to
        self.failure = None  # what stopped the stream (raised by the transfer thread)
        self.last_heard = time.monotonic()
        self._closed = False
        self._here = WritesHere(downloads.write_files_here)

    def _expect(self, names, offsets):
        self._names, self._offsets = list(names), list(offsets)
        self._parts = [_part_of(self._local, name) for name in self._names]

    @property
    def due(self):
        """The file whose pieces have not (all) come, or None."""
        return self._names[self.position] if self.position < len(self._names) else None

    def listing(self, message):
        """Take a fetch_changed reply's listing: the files that follow it (the connection's reading thread)."""
        self._reading(lambda: self._expect(*self._plan(message.get("files") or [])))

    def take(self, piece):
        """Queue one file_data piece for writing (the connection's reading thread)."""
        self._reading(lambda: self._take(piece))

    def _reading(self, step):
        """``step()`` for a reply that arrived, unless the stream has ended; its failure kept for the transfer."""
        with self._lock:
            if self._closed or self.failure is not None:
                return
            self.last_heard = time.monotonic()
            try:
                step()
            except (OSError, TransferError) as exc:
                self.failure = exc
            except Exception as exc:  # a malformed reply (or a fault of ours): the fetch fails, the socket reads on
                self.failure = TransferError("the worker's reply could not be taken ({!s}): fetch again".format(exc))

    def close(self):
        """No piece is taken after this returns (the transfer thread has stopped waiting for them)."""
        with self._lock:
            self._closed = True

    def _take(self, piece):
        position = self.position
        if position >= len(self._names) or piece.get("name") != self._names[position]:
            due = self._names[position] if position < len(self._names) else "nothing more"
            raise TransferError("the worker sent {!s} where {:s} was due: fetch again".format(piece.get("name"), due))
        name, part = self._names[position], self._parts[position]
        if self._offsets[position] and piece.get("offset") == 0:
            os.remove(part)  # the file is shorter on the worker than the part: it comes whole
            self._offsets[position] = 0
        then = None
        if piece.get("eof"):
            target = os.path.join(self._local, *name.split("/"))
            then = lambda: os.replace(part, target)  # noqa: E731
        if then is None or not self._here.write(self._downloads, part, piece, then):
            self._downloads._write_piece(part, piece, then=then)
        if then is not None:
            self.position += 1
            self._fetched(name)


class WritesHere:
    """Writes a fetched file's last piece in the thread that received it, while such writes stay quick.

    On a machine with few cores the writer thread has no core of its own: handing it each of a job's
    small files only added hand-overs of the interpreter lock between two threads that took turns
    anyway. On the 2-core test machine, a 512p result's fetch (83 files) alternated in one process with
    and without, page cache dropped first: 61.2 -> 58.5 ms, 55.6 -> 56.1, 52.8 -> 48.0, 53.2 -> 51.4,
    57.4 -> 52.0 (medians; faster in 98 of 152 pairs). A write that is slow (a network share, a busy
    disk) twice hands the rest of the fetch to the writer thread, so the socket is read on meanwhile.
    """

    QUICK_S = 0.0002  # what a small file's write may take here, beyond SECONDS_PER_BYTE for its bytes
    SECONDS_PER_BYTE = 1e-9  # 1 GB/s: a 300 KB frame 0.5 ms in all (0.1-0.15 ms on the test machine's disk)
    SLOW_WRITES = 2  # slow writes that end writing here

    def __init__(self, enabled):
        self.enabled = enabled
        self.slow = 0

    def write(self, downloads, part, piece, then):
        """Write ``piece`` (a file's last) and run ``then`` here; False when it is the writer thread's."""
        data = _bytes_of(piece)
        if not self.enabled or len(data) >= direct_io.DIRECT_FROM_BYTES:
            return False
        seconds = downloads.background.write_now(part, piece["offset"], data, then)
        if seconds is None:
            return False
        downloads.counters["down"] += len(data)
        if seconds > self.QUICK_S + len(data) * self.SECONDS_PER_BYTE:
            self.slow += 1
            self.enabled = self.slow < self.SLOW_WRITES
        return True


def usable_cores():
    """The CPU cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):
        return os.cpu_count() or 1


class Progress:
    """A folder's fetch as local ``progress`` events: its bytes in all, and those in place so far."""

    def __init__(self, job_id, deliver):
        self._job_id, self._deliver = job_id, deliver
        self._sizes, self.done, self.total, self._told = {}, 0, 0, False

    def plan(self, listed, held):
        """The names of the listing ``listed`` to fetch: all but those ``held`` here at their listed size."""
        self.total = sum(entry["size"] for entry in listed)
        self._sizes = {entry["name"]: entry["size"] for entry in listed if held.get(entry["name"]) != entry["size"]}
        self.done = self.total - sum(self._sizes.values())
        return list(self._sizes)

    def fetched(self, name):
        self.done += self._sizes.get(name, 0)
        self._told = True
        self._deliver(_local_progress(self._job_id, self.done, self.total))

    def finish(self):
        """Say where the fetch ended when no file's arrival has said it."""
        if not self._told:
            self._deliver(_local_progress(self._job_id, self.done, self.total))


def _held(sizes, fetched_now):
    """What a fetch need not bring again, by name and size: frames and mattes (written once: one of the
    listed size is the one) and the files this fetch has already brought; never a part file."""
    return {name: size for name, size in sizes.items() if not name.rpartition("/")[2].startswith(".")
            and (name.startswith(("frames/", protocol.MATTE_FOLDER + "/")) or name in fetched_now)}


def _name_of_part(key):
    """The job folder's name of a part file (``frames/.f.png.part`` -> ``frames/f.png``); None for other files."""
    folder, _, base = key.rpartition("/")
    if not (base.startswith(".") and base.endswith(".part")) or len(base) <= len("..part"):
        return None
    return (folder + "/" if folder else "") + base[1:-len(".part")]


def _folder_of(remote):
    """The name the worker knows a job folder by (its last component)."""
    return os.path.basename(remote.rstrip("/\\"))


def _local_sizes(local, prefix=""):
    """The sizes of the regular files under the local folder ``local`` by their names in the job folder
    (part files too): one listing of each folder where a stat of each file cost a job's fetch 1.5 ms."""
    sizes = {}
    try:
        with os.scandir(local) as entries:
            for entry in entries:
                if entry.is_dir(follow_symlinks=False):
                    sizes.update(_local_sizes(entry.path, prefix + entry.name + "/"))
                elif entry.is_file():
                    sizes[prefix + entry.name] = entry.stat().st_size
    except OSError:  # not there yet (or unreadable): nothing of it is kept
        pass
    return sizes


def _part_name(name):
    """The name in the job folder of `name`'s part file (``frames/.f.png.part``)."""
    folder, _, base = name.rpartition("/")
    return (folder + "/" if folder else "") + "." + base + ".part"


def _part_of(local, name):
    """Where `name` of a job folder is written until whole (its folder is made by the first write)."""
    return os.path.join(local, _part_name(name).replace("/", os.sep))


def _bytes_of(piece):
    """A ``file_data`` reply's bytes: its binary frame's, or its base64 ``data``."""
    payload = piece.get(protocol.PAYLOAD_FIELD)
    return payload if protocol.is_payload(payload) else base64.b64decode(piece.get("data") or "")


def _local_progress(job_id, done, total):
    return {"v": protocol.PROTOCOL_VERSION, "type": "progress", "job": job_id, "local": True, "phase": "download",
            "bytes": done, "total": total}
