"""A STAND-IN FOR THE HUGGING FACE HUB, served on loopback for the download tests (the machines that run
the tests cannot reach huggingface.co).

It answers the two URLs `huggingface_hub`'s download path uses, as the hub does (read from the
client's `file_download.get_hf_file_metadata` / `http_get` and the hub's documented behaviour):

* ``HEAD|GET /{repo}/resolve/{revision}/{path}``: for a large (LFS) file, 302 to an absolute
  "CDN" URL with ``X-Repo-Commit``, ``X-Linked-Etag`` (the file's SHA-256, quoted) and
  ``X-Linked-Size``; for a small file, 200 with ``ETag`` (git's blob SHA-1) and ``Content-Length``.
  Gated repositories answer 401 without a token and 403 (``X-Error-Code: GatedRepo``) with one
  that has not been granted access.
* ``GET /api/models/{repo}/tree/{revision}``: the repository's files as the hub lists them (``type``,
  ``path``, ``size``, ``oid`` and, for LFS files, ``lfs: {oid, size, pointerSize}``), gated like the rest.
* ``GET /cdn/{sha256}`` on a second port (the "CDN": another origin, so the client takes the file's
  metadata from the 302 itself and sends no token there, as with the hub's CDN): the bytes,
  ``Range: bytes=N-`` answered with 206 and ``Content-Range``.

Faults the tests switch on per file: `cut_after` (the first GET sends the full Content-Length,
then only N bytes and drops the connection), `corrupt` (one byte served flipped, headers still
carry the true hash), `delay_s` (a pause after each chunk, so a test can stop a download midway),
`claimed_size` (the size the HEAD announces, to ask for more disk than there is). `requests`
records (method, path, Range) of every request.
"""

from __future__ import annotations

import hashlib
import json
import threading
import time
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

COMMIT = "0123456789abcdef0123456789abcdef01234567"
LFS_MIN_BYTES = 1024  # smaller files are plain git files, as on the hub (its threshold is larger)
CHUNK = 4096


@dataclass
class HostedFile:
    data: bytes
    cut_after: int | None = None
    corrupt: bool = False
    delay_s: float = 0.0
    claimed_size: int | None = None

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()

    @property
    def git_sha1(self) -> str:
        return hashlib.sha1(b"blob %d\0" % len(self.data) + self.data).hexdigest()

    @property
    def lfs(self) -> bool:
        return len(self.data) >= LFS_MIN_BYTES


@dataclass
class HubStandIn:
    """Repositories of files ({repo: {path: HostedFile}}), gated repositories and the tokens granted."""

    repos: dict[str, dict[str, HostedFile]] = field(default_factory=dict)
    gated: set[str] = field(default_factory=set)
    granted_tokens: set[str] = field(default_factory=set)
    requests: list[tuple[str, str, str]] = field(default_factory=list)

    def add(self, repo: str, path: str, data: bytes) -> HostedFile:
        hosted = HostedFile(data)
        self.repos.setdefault(repo, {})[path] = hosted
        return hosted

    def by_sha(self, sha: str) -> HostedFile | None:
        return next((f for files in self.repos.values() for f in files.values() if f.sha256 == sha), None)

    def gets(self, hosted: HostedFile) -> list[tuple[str, str, str]]:
        return [r for r in self.requests if r[0] == "GET" and r[1] == f"/cdn/{hosted.sha256}"]

    cdn_url: str = ""

    def start(self) -> tuple[list[ThreadingHTTPServer], str]:
        """Serve the hub and its CDN; (the servers, the hub's URL for HF_ENDPOINT)."""
        hub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args):  # quiet
                pass

            def do_HEAD(self):
                self._answer(head=True)

            def do_GET(self):
                self._answer(head=False)

            def _answer(self, head: bool):
                hub.requests.append((self.command, self.path, self.headers.get("Range", "")))
                if self.path.startswith("/cdn/"):
                    return self._cdn(self.path[len("/cdn/"):], head)
                tree = self.path.startswith("/api/models/") and "/tree/" in self.path
                parts = self.path.removeprefix("/api/models").lstrip("/").split("/tree/" if tree else "/resolve/", 1)
                if len(parts) != 2:
                    return self._empty(404)
                repo, rest = parts
                revision, _, path = rest.partition("?")[0].partition("/")
                if repo in hub.gated:
                    auth = self.headers.get("Authorization", "")
                    if not auth.startswith("Bearer "):
                        return self._empty(401, {"X-Error-Code": "GatedRepo"})
                    if auth[len("Bearer "):] not in hub.granted_tokens:
                        return self._empty(403, {"X-Error-Code": "GatedRepo",
                                                 "X-Error-Message": "Access to this repo is restricted"})
                if tree:
                    return self._listing(repo)
                hosted = hub.repos.get(repo, {}).get(path)
                if hosted is None:
                    return self._empty(404, {"X-Error-Code": "EntryNotFound"})
                if hosted.lfs:
                    return self._empty(302, {"Location": f"{hub.cdn_url}/cdn/{hosted.sha256}", "X-Repo-Commit": COMMIT,
                                             "X-Linked-Etag": f'"{hosted.sha256}"',
                                             "X-Linked-Size": str(hosted.claimed_size or len(hosted.data)),
                                             "ETag": f'"{hosted.git_sha1}"'})
                self._send(hosted, head, {"ETag": f'"{hosted.git_sha1}"', "X-Repo-Commit": COMMIT})

            def _listing(self, repo: str):
                if repo not in hub.repos:
                    return self._empty(404, {"X-Error-Code": "RepoNotFound"})
                entries = [{"type": "file", "path": path, "size": len(f.data), "oid": f.git_sha1,
                            **({"lfs": {"oid": f.sha256, "size": len(f.data), "pointerSize": 134}} if f.lfs else {})}
                           for path, f in sorted(hub.repos[repo].items())]
                body = json.dumps(entries).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def _cdn(self, sha: str, head: bool):
                hosted = hub.by_sha(sha)
                if hosted is None:
                    return self._empty(404)
                self._send(hosted, head, {"ETag": f'"{sha}"'})

            def _send(self, hosted: HostedFile, head: bool, headers: dict):
                data = hosted.data
                if hosted.corrupt:
                    middle = len(data) // 2
                    data = data[:middle] + bytes([data[middle] ^ 0xFF]) + data[middle + 1:]
                start, status = 0, 200
                wanted = self.headers.get("Range", "")
                if wanted.startswith("bytes=") and wanted.endswith("-"):
                    start, status = int(wanted[len("bytes="):-1]), 206
                body = data[start:]
                self.send_response(status)
                for name, value in headers.items():
                    self.send_header(name, value)
                self.send_header("Accept-Ranges", "bytes")
                self.send_header("Content-Length", str(len(body)))
                if status == 206:
                    self.send_header("Content-Range", f"bytes {start}-{len(data) - 1}/{len(data)}")
                self.end_headers()
                if head:
                    return
                limit = len(body)
                if hosted.cut_after is not None:
                    limit, hosted.cut_after = min(limit, hosted.cut_after), None  # only the first GET is cut
                sent = 0
                while sent < limit:
                    piece = body[sent:min(sent + CHUNK, limit)]
                    self.wfile.write(piece)
                    self.wfile.flush()
                    sent += len(piece)
                    if hosted.delay_s:
                        time.sleep(hosted.delay_s)
                if limit < len(body):
                    self.close_connection = True  # the cut: fewer bytes than Content-Length, then the socket closes

            def _empty(self, status: int, headers: dict | None = None):
                self.send_response(status)
                for name, value in (headers or {}).items():
                    self.send_header(name, value)
                self.send_header("Content-Length", "0")
                self.end_headers()

        servers = [ThreadingHTTPServer(("127.0.0.1", 0), Handler) for _ in range(2)]
        for server in servers:
            threading.Thread(target=server.serve_forever, daemon=True).start()
        hub.cdn_url = f"http://127.0.0.1:{servers[1].server_address[1]}"
        return servers, f"http://127.0.0.1:{servers[0].server_address[1]}"
