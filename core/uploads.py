# SPDX-License-Identifier: GPL-3.0-or-later
"""Uploads of a job's inputs to a remote worker (transfer mode), for `transfer.Transfers`.

Standard library only and no ``bpy``. Each input file goes as a blob, in chunks from where the
worker stands (``blob_status``), so a cut costs at most the chunks in flight and a blob the worker
holds is never sent again; a folder of images (or a ``%04d`` / ``####`` sequence) goes as its files
and a listing of them (``blobtree:``). A file hashed before is named by its SHA-256; any other goes
at once as an unnamed upload the worker names by the hash of what arrived.
"""

import collections
import json
import os
import re
import secrets
import tempfile

from .. import protocol
from .downloads import IN_FLIGHT, TransferError
from .file_digests import cached_sha256, file_identity, file_sha256
from .worker_tls import WorkerClientError

INPUT_FIELDS = ("driving", "reference", "driving_mask", "reference_mask")
LIST_FIELDS = ("extra_references", "extra_reference_masks")
_SHA256 = re.compile(r"[0-9a-f]{64}")
FILES_IN_FLIGHT = 16  # a folder's files asked for (or sent whole) before the first reply is awaited


class UploadCancelled(Exception):
    """The artist cancelled the upload of a submit's inputs."""


def folder_files(folder):
    """The files of a folder a job reads (an image sequence), in name order; hidden ones left out."""
    names = sorted(n for n in os.listdir(folder) if not n.startswith(".")
                   and os.path.isfile(os.path.join(folder, n)))
    if not names:
        raise TransferError("the folder {:s} holds no files".format(folder))
    return [os.path.join(folder, n) for n in names]


def sequence_files(pattern):
    """The files of an image sequence named like ``shot/frame_%04d.png`` or ``shot/frame_####.png``, in order."""
    folder, name = os.path.split(pattern)
    if not protocol.SEQUENCE_NAME.fullmatch(name):
        raise TransferError("a sequence sent to a remote worker is named with letters, digits, '.', '_', '-' "
                            "(a letter, digit or '_' first) and one %d or #### counter: {:s}".format(name))
    expression = protocol.sequence_regex(name)
    files = [os.path.join(folder or ".", n) for n in sorted(os.listdir(folder or "."))
             if expression.fullmatch(n) and os.path.isfile(os.path.join(folder or ".", n))]  # not a folder or FIFO
    if not files:
        raise TransferError("no files of the sequence {:s}".format(pattern))
    return files


def safe_name(path):
    """The blob link name for a local file or folder: its base name in the characters the worker takes."""
    return protocol.link_name_for(os.path.basename(path))


class Uploads:
    """The upload half of `transfer.Transfers` (which provides ``_request``, ``_ask``, ``_answer``,
    ``_forget``, ``_retrying``, ``_deliver``, ``_cancelled``, ``_closing``, ``_named``, ``binary``,
    ``chunk_bytes``, ``unnamed_uploads`` and ``counters``)."""

    def upload_file(self, path):
        """Upload one file now, in the caller's thread (benches, tools); its blob reference."""
        size = os.path.getsize(path)
        return self._upload(path, None, [0], size)

    def _upload_inputs(self, task, job, request_id):
        paths = []
        if task == "generate":
            paths += [job.get(field) for field in INPUT_FIELDS]
            for field in LIST_FIELDS:
                paths += list(job.get(field) or [])
            paths += [lora.get("path") for lora in job.get("loras") or [] if isinstance(lora, dict)]
        else:
            paths.append(job.get("source"))
        paths = list(dict.fromkeys(p for p in paths if p))
        folders, patterns = {}, {}
        for path in paths:
            if os.path.isdir(path):
                folders[path] = folder_files(path)
            elif not os.path.isfile(path) and protocol.SEQUENCE_TOKEN.search(os.path.basename(path)):
                folders[path] = sequence_files(path)  # an image sequence: its folder's matching files go
                patterns[path] = os.path.basename(path)
            elif not os.path.isfile(path):
                raise TransferError("a remote worker takes files and folders of images, not {:s}".format(path))
        sizes = [os.path.getsize(f) for p in paths for f in folders.get(p, [p])]
        total, refs, done = sum(sizes), {}, [0]
        # A clip, a still, masks, LoRAs: those hashed before asked for together (the next take's, over a remote
        # link: one round trip, not one each); a new one sent on its own, so a cut resends one file at most.
        singles = [path for path in paths if path not in folders]
        for path, sha in zip(singles, self._upload_files(singles, request_id, done, total, new_whole=False)):
            refs[path] = protocol.blob_ref(sha, safe_name(path))
        for path in folders:
            shas = self._upload_files(folders[path], request_id, done, total)
            listing = [{"name": safe_name(f), "sha256": sha} for f, sha in zip(folders[path], shas)]
            folder = os.path.dirname(path) if path in patterns else path
            refs[path] = self._upload_listing(listing, safe_name(folder.rstrip("/\\")), request_id)
            if path in patterns:  # the worker's copy of the folder, and the sequence's pattern in it
                refs[path] += "/" + patterns[path]

        def ref(path):
            return refs.get(path, path) if path else path

        for field in INPUT_FIELDS + ("source",):
            if job.get(field):
                job[field] = ref(job[field])
        for field in LIST_FIELDS:
            if job.get(field):
                job[field] = [ref(p) for p in job[field]]
        if job.get("loras"):
            job["loras"] = [dict(lora, path=ref(lora.get("path"))) for lora in job["loras"]]
        return job

    def _upload_files(self, files, request_id, done, total, new_whole=True):
        """Upload files (a job's inputs, or a folder's); their SHA-256s, in order.

        A file hashed before is asked for by its hash, a new file of one chunk at most goes whole in one
        request (`new_whole`; else as `_upload` sends it), and FILES_IN_FLIGHT of these go before the first
        reply is awaited: one at a time, a 300-frame sequence over a link of 20 ms would wait 6 s for round
        trips alone (and again for every take submitted with it). A file the worker turns out not to hold,
        and a new large one, go as `_upload` sends one; so do the files still unnamed when the connection
        is cut."""
        shas = [None] * len(files)
        in_flight = collections.deque()  # (index, request id, known SHA-256 or None, file identity, size)

        def settle():
            index, asked, known, identity, size = in_flight.popleft()
            reply = self._answer(asked, "blob_put" if known is None else "blob_status")
            if known is not None and reply.get("have") != size:  # not held (evicted, or another's): send it
                shas[index] = protocol.parse_blob_ref(self._upload(files[index], request_id, done, total))[0]
                return
            sha = known or reply.get("sha256")
            if known is None and (not reply.get("complete") or not isinstance(sha, str)
                                  or not _SHA256.fullmatch(sha)):
                raise TransferError("the worker did not name the uploaded file {:s}: upload it again".format(
                    files[index]))
            if file_identity(files[index]) == identity:
                self._named[identity] = sha
            shas[index] = sha
            done[0] += size
            self._deliver(local_message("progress", request_id=request_id, phase="upload", bytes=done[0],
                                        total=total))

        try:
            for index, path in enumerate(files):
                if request_id in self._cancelled or self._closing.is_set():
                    raise UploadCancelled()
                known, data, identity, size = self._how_to_send(path, new_whole)
                if known is not None:
                    in_flight.append((index, self._ask("blob_status", None, sha256=known), known, identity, size))
                elif data is not None:
                    in_flight.append((index, self._ask("blob_put", data, upload=secrets.token_urlsafe(24),
                                                       size=size, offset=0), None, identity, size))
                    self.counters["up"] += size
                else:
                    while in_flight:
                        settle()
                    shas[index] = protocol.parse_blob_ref(self._upload(path, request_id, done, total))[0]
                if len(in_flight) >= FILES_IN_FLIGHT:
                    settle()
            while in_flight:
                settle()
        except (ConnectionError, WorkerClientError):  # cut: the rest as `_upload` sends them, once it is back
            self._forget(item[1] for item in in_flight)
            for index, path in enumerate(files):
                if shas[index] is None:
                    shas[index] = protocol.parse_blob_ref(self._upload(path, request_id, done, total))[0]
        except BaseException:
            self._forget(item[1] for item in in_flight)
            raise
        return shas

    def _how_to_send(self, path, new_whole=True):
        """(its SHA-256, None, identity, size) for a file hashed before, to be asked for; (None, its bytes,
        identity, size) for a new file that goes whole in one unnamed upload; all None but the size for a
        file that goes as `_upload` sends it (a new one larger than a chunk, or without binary framing)."""
        size, identity = os.path.getsize(path), file_identity(path)
        if not self.binary or not self.unnamed_uploads or not size:
            return None, None, None, size
        known = cached_sha256(path) or self._named.get(identity)
        if known is not None:
            return known, None, identity, size
        if size > self.chunk_bytes or not new_whole:
            return None, None, None, size
        with open(path, "rb") as fh:
            data = fh.read(size + 1)
        if len(data) != size:
            raise TransferError(f"{path} changed while it was uploaded: upload it again")
        return None, data, identity, size

    def _upload_listing(self, listing, name, request_id):
        """Upload a folder's listing (as a blob of its own); the folder's reference."""
        data = json.dumps({"files": listing}, sort_keys=True).encode("utf-8")
        fd, temp = tempfile.mkstemp(prefix="scail2-listing-", suffix=".json")
        try:
            with os.fdopen(fd, "wb") as fh:
                fh.write(data)
            sha = protocol.parse_blob_ref(self._upload(temp, None, [0], len(data)))[0]  # no progress of its own
        finally:
            os.remove(temp)
        return protocol.blob_tree_ref(sha, name)

    def _upload(self, path, request_id, done, total):
        """Upload one file (resuming where the worker holds part of it); its blob reference.

        A file hashed before (`file_digests`, or named by this worker already) is asked for by its
        SHA-256 first, so what the worker holds is never sent again. Any other file goes at once as an
        unnamed upload the worker names by the hash of what arrives: hashing it here first would hold
        the wire idle for as long as a fast link takes to carry it. Its id is new, so nothing is asked
        before its bytes go (a small file: one request, not two; after a cut, where the worker stands).
        """
        size, identity = os.path.getsize(path), file_identity(path)
        sha = cached_sha256(path) or self._named.get(identity)
        if sha is None and not self.unnamed_uploads:
            sha = file_sha256(path)
        key = {"sha256": sha} if sha else {"upload": secrets.token_urlsafe(24)}
        finished = {}
        ask_first = [sha is not None]  # a new unnamed upload's id is this call's own: the worker holds none of it

        def go_on():
            status = self._request("blob_status", **key) if ask_first[0] else {"have": -1}
            ask_first[0] = True  # after a cut: where the worker stands
            have = status["have"]
            in_flight = collections.deque()  # request ids of chunks sent, oldest first
            offset = max(have, 0)
            # One buffer, read into again for every chunk: each chunk is sent before the next is read.
            buffer = memoryview(bytearray(self.chunk_bytes))
            with open(path, "rb", buffering=0) as fh:
                fh.seek(offset)
                while max(have, 0) < size:
                    if request_id in self._cancelled or self._closing.is_set():
                        raise UploadCancelled()
                    while offset < size and len(in_flight) < (IN_FLIGHT if self.binary else 1):
                        piece = buffer[: fh.readinto(buffer)]
                        if not piece:
                            raise TransferError(f"{path} became shorter while it was uploaded: upload it again")
                        in_flight.append(self._ask("blob_put", piece, **key, size=size, offset=offset))
                        self.counters["up"] += len(piece)
                        offset += len(piece)
                    try:
                        status = self._answer(in_flight.popleft(), "blob_put")
                    except TransferError:
                        self._forget(in_flight)
                        raise
                    have = status["have"]
                    self._deliver(local_message("progress", request_id=request_id, phase="upload",
                                                bytes=done[0] + have, total=total))
            if size == 0 and not status.get("complete"):
                status = self._request("blob_put", **key, size=0, offset=0, data="")
            finished.update(status)

        self._retrying(go_on)
        if sha is None:
            sha = finished.get("sha256")
            if not isinstance(sha, str) or not _SHA256.fullmatch(sha):
                raise TransferError("the worker did not name the uploaded file: upload it again")
            if file_identity(path) == identity:  # not written meanwhile: the hash is this version's
                self._named[identity] = sha
        done[0] += size
        return protocol.blob_ref(sha, safe_name(path))


def local_message(kind, **fields):
    """A message the client makes itself (``local``: True), as the worker's are read."""
    message = {"v": protocol.PROTOCOL_VERSION, "type": kind, "job": fields.pop("job", None), "local": True}
    if kind == "error":
        fields.setdefault("hint", "")
    message.update(fields)
    return message
