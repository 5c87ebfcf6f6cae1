"""Who is asking: the identities a shared worker accepts, and who owns which job folder.

A studio's worker (`serve --tokens FILE`) takes one token per artist. The file holds one line per
artist, `NAME ROLE scrypt$N$r$p$SALT$HASH`: the name, `artist` or `admin`, and a salted scrypt
hash of the token, never the token itself (`python -m backend tokens` adds, lists and revokes
entries, and prints a new token once). The old single `--token` stays as one unnamed identity.

The file is read again whenever it changes (checked on every request and before every event is
sent), so a revoked token is refused at once, even on a connection that is open. An editor saving it
empties or removes the file and then writes it: read in between, the file would refuse every artist
(and close their connections), so a file that is gone, empty, damaged or ends mid-line is taken only
once it has been that way for SETTLE_S; a whole one (as the `tokens` command writes) counts at once.
A token once verified is remembered by its SHA-256 (scrypt is slow on purpose; a request must not
be) for as long as the file stays the same.

Without named tokens there is a single user: every identity sees every job, as before.
"""

from __future__ import annotations

import hashlib
import hmac
import json
import os
import re
import secrets
import threading
import time
from dataclasses import dataclass
from pathlib import Path

import protocol

SCRYPT_N, SCRYPT_R, SCRYPT_P = 1 << 14, 8, 1  # 16 MiB and ~50 ms per check: slow for a guesser, once per token
SALT_BYTES = 16
HASH_BYTES = 32
TOKEN_BYTES = 32  # secrets.token_urlsafe: 43 characters
MAX_REMEMBERED = 1024  # verified tokens remembered at most (then forgotten, and verified again)
SETTLE_S = 0.5  # an empty or damaged tokens file changed this recently may still be being written
OWNERS_FILE = ".owners.json"  # under the jobs root (a dot name: never a remote client's job folder)
_NAME = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,63}")
# hash_token's form, whole: a line cut short (a file read while an editor writes it) never passes as one
_STORED = re.compile(r"scrypt\$[1-9]\d*\$[1-9]\d*\$[1-9]\d*\$(?:[0-9a-f]{2}){8,64}\$(?:[0-9a-f]{2}){%d}" % HASH_BYTES)


@dataclass(frozen=True)
class Identity:
    """An artist (named), the unnamed `--token` identity (name ""), or the one user of a private worker."""

    name: str
    admin: bool = False

    def sees(self, owner: str) -> bool:
        return self.admin or owner == self.name


EVERYONE = Identity("", admin=True)  # a worker without named tokens: one user, who sees everything


class TokensFileError(ValueError):
    """The tokens file cannot be used; one line."""


def check_name(name: str) -> str:
    if not isinstance(name, str) or not _NAME.fullmatch(name):
        raise TokensFileError(f"an artist's name is 1-64 letters, digits, '.', '_' or '-', starting with a letter "
                              f"or digit: {str(name)[:80]!r}")
    return name


def hash_token(token: str, salt: bytes | None = None) -> str:
    """The stored form of a token: `scrypt$N$r$p$SALT$HASH` (hex)."""
    salt = salt or secrets.token_bytes(SALT_BYTES)
    digest = hashlib.scrypt(token.encode("utf-8"), salt=salt, n=SCRYPT_N, r=SCRYPT_R, p=SCRYPT_P, dklen=HASH_BYTES)
    return f"scrypt${SCRYPT_N}${SCRYPT_R}${SCRYPT_P}${salt.hex()}${digest.hex()}"


def token_matches(token: str, stored: str) -> bool:
    try:
        scheme, n, r, p, salt, digest = stored.split("$")
        if scheme != "scrypt":
            return False
        given = hashlib.scrypt(token.encode("utf-8"), salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p),
                               dklen=len(bytes.fromhex(digest)))
    except (ValueError, MemoryError):
        return False
    return hmac.compare_digest(given, bytes.fromhex(digest))


@dataclass(frozen=True)
class Entry:
    name: str
    role: str
    stored: str  # hash_token's form

    def line(self) -> str:
        return f"{self.name} {self.role} {self.stored}"


def read_entries(path: Path) -> dict[str, Entry]:
    """The entries of a tokens file by name (none when there is no file); TokensFileError (one line) when
    it is damaged."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Notepad) is not a name
    except FileNotFoundError:
        return {}
    except (OSError, UnicodeDecodeError) as exc:
        raise TokensFileError(f"cannot read the tokens file {path}: {exc}") from None
    return parse_entries(text, path)


def parse_entries(text: str, path: Path) -> dict[str, Entry]:
    """The entries of the text of the tokens file `path`; TokensFileError (one line) when it is damaged."""
    entries: dict[str, Entry] = {}
    for number, raw in enumerate(text.splitlines(), 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        fields = line.split()
        if len(fields) != 3 or fields[1] not in protocol.ROLES or not _STORED.fullmatch(fields[2]):
            raise TokensFileError(f"{path} line {number}: not 'NAME ROLE HASH' (ROLE artist or admin, HASH as "
                                  "`python -m backend tokens` writes it); edit it with that command")
        check_name(fields[0])
        if fields[0] in entries:
            raise TokensFileError(f"{path} line {number}: {fields[0]} is named twice")
        entries[fields[0]] = Entry(*fields)
    return entries


def read_as_saved(path: Path) -> tuple[dict[str, Entry], str | None]:
    """(the tokens file's entries, why it may be caught mid-save: gone, empty, damaged or ending mid-line;
    None when it is whole). The worker and the `tokens` command both wait out such a file (SETTLE_S)."""
    try:
        text = Path(path).read_text(encoding="utf-8-sig")  # a BOM (Notepad) is not a name
    except FileNotFoundError:
        return {}, f"the tokens file {path} is gone"
    except (OSError, UnicodeDecodeError) as exc:
        return {}, f"cannot read the tokens file {path}: {exc}"
    try:
        entries = parse_entries(text, path)
    except TokensFileError as exc:
        return {}, str(exc)
    if not text:
        return {}, f"the tokens file {path} is empty"
    return entries, None if text.endswith("\n") else f"the tokens file {path} ends mid-line"


def write_entries(path: Path, entries: dict[str, Entry]) -> None:
    """The tokens file, whole (readable by its owner only), put in place in one step."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    text = "# SCAIL-2 worker tokens: NAME ROLE HASH (edit with `python -m backend tokens`)\n"
    text += "".join(entry.line() + "\n" for entry in entries.values())
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as fh:
        fh.write(text)
    os.replace(tmp, path)


class TokenBook:
    """The tokens a worker takes: the named ones of `path` (re-read on change) and the unnamed `shared` one."""

    def __init__(self, path: Path | None = None, shared: str | None = None):
        self.path, self.shared = (Path(path) if path else None), shared or None
        self._lock = threading.Lock()
        self._stamp: tuple | None = None
        self._gone_since: float | None = None  # when the file was first seen gone (a save that replaces it)
        self._entries: dict[str, Entry] = {}
        self._whole = False  # _entries are a whole file's (not a damaged or vanished one's)
        self._known: dict[bytes, str] = {}  # sha256(token) -> name, for the file as it is now
        if self.path is not None:
            if not os.path.exists(self.path):  # a mistyped path would start a worker nobody can reach
                raise TokensFileError(f"no tokens file at {self.path}: add an artist first with "
                                      f"`python -m backend tokens --file {self.path} add NAME`")
            self._entries = read_entries(self.path)  # a damaged file stops the start, in one line
            self._stamp, self._whole = self._stat(), True

    @property
    def required(self) -> bool:
        """Whether requests must carry a token."""
        return self.path is not None or self.shared is not None

    @property
    def named(self) -> bool:
        return self.path is not None

    def names(self) -> list[str]:
        with self._lock:
            self._refresh()
            return list(self._entries)

    def identify(self, token: object) -> Identity | None:
        """The identity of `token`; None when it is not one of this worker's."""
        if not self.required:
            return EVERYONE
        if not isinstance(token, str) or not token:
            return None
        if self.shared is not None and hmac.compare_digest(token.encode(), self.shared.encode()):
            return EVERYONE if not self.named else Identity("")
        if self.path is None:
            return None
        key = hashlib.sha256(token.encode("utf-8")).digest()
        with self._lock:
            self._refresh()
            name = self._known.get(key)
            entries = dict(self._entries)
        if name is None:
            name = next((entry.name for entry in entries.values() if token_matches(token, entry.stored)), None)
            if name is None:
                return None
            with self._lock:
                if len(self._known) >= MAX_REMEMBERED:
                    self._known.clear()
                self._known[key] = name
        entry = entries.get(name)
        return Identity(name, admin=entry.role == protocol.ROLE_ADMIN) if entry else None

    def is_current(self, identity: Identity) -> bool:
        """Whether `identity` may still be served (a named one not revoked, nor its role changed)."""
        if not identity.name:
            return True
        with self._lock:
            self._refresh()
            entry = self._entries.get(identity.name)
        return entry is not None and (entry.role == protocol.ROLE_ADMIN) == identity.admin

    def revoked(self, owners: set[str]) -> set[str]:
        """The named `owners` a whole tokens file no longer holds: their jobs are to stop. None of them while
        the file is damaged or gone (that refuses every named token until it is fixed, but stops no one's work),
        nor before it has stayed as it is for SETTLE_S: an editor writing it in place can be caught at the end
        of a line, the file whole-looking but short of the artists after it. Refusing them for that moment is
        undone by the rest of the save; cancelling their jobs would not be."""
        if self.path is None:
            return set()
        with self._lock:
            self._refresh()
            if not self._whole or self._stamp is None or time.time() - self._stamp[2] / 1e9 < SETTLE_S:
                return set()
            return {owner for owner in owners if owner and owner not in self._entries}

    def _stat(self) -> tuple | None:
        try:
            stat = self.path.stat()
        except OSError:
            return None
        return stat.st_ino, stat.st_size, stat.st_mtime_ns

    def _refresh(self) -> None:
        """Read the file again if it changed (hold _lock). Damaged or gone: no named token is taken."""
        if self.path is None:
            return
        stamp = self._stat()
        if stamp is not None:
            self._gone_since = None  # here (again): a later disappearance is a new save
        if stamp == self._stamp:
            return
        from .jobs import log

        entries, unfinished = read_as_saved(self.path)
        if unfinished is not None and self._settling(stamp):
            return  # maybe caught mid-save: the last table stands until the file has been still a moment
        before = self._entries if self._whole else None
        # Still for SETTLE_S, a file that parses is whole even without its last newline (some editors leave it off)
        self._stamp, self._known, self._entries, self._whole = stamp, {}, entries, bool(entries) or unfinished is None
        if unfinished is not None and not entries:
            log(f"{unfinished}: refusing every named token until it is fixed")
            return
        log(f"tokens file {self.path} changed: {len(self._entries)} named tokens{_changes(before, entries)}")

    def _settling(self, stamp: tuple | None) -> bool:
        """Whether the file changed less than SETTLE_S ago (when gone: first seen gone that recently)."""
        now = time.time()
        if stamp is not None:
            return now - stamp[2] / 1e9 < SETTLE_S
        if self._gone_since is None:
            self._gone_since = now
        return now - self._gone_since < SETTLE_S


def _changes(before: dict[str, Entry] | None, after: dict[str, Entry]) -> str:
    """Who a change to the tokens file concerns, for the log ("; revoked: dave; added: erin"); "" when unknown."""
    if before is None:
        return ""
    said = [("revoked", [name for name in before if name not in after]),
            ("added", [name for name in after if name not in before]),
            ("new token", [name for name in after if name in before and after[name].stored != before[name].stored]),
            ("new role", [name for name in after if name in before and after[name].role != before[name].role])]
    return "".join(f"; {what}: {', '.join(names)}" for what, names in said if names)


class FolderOwners:
    """Which identity each job folder belongs to, kept in the jobs root (so it outlives the worker)."""

    def __init__(self, jobs_root: Path):
        self.path = Path(jobs_root) / OWNERS_FILE
        self._lock = threading.Lock()
        try:
            data = protocol.read_json_file(self.path, "job owners") if self.path.exists() else {}
        except protocol.ProtocolError as exc:
            from .jobs import log

            log(f"{exc}: earlier job folders belong to no artist now")
            data = {}
        self._owners = {str(k): str(v) for k, v in data.items()} if isinstance(data, dict) else {}

    def owner_of(self, folder: Path) -> str:
        """The name of the folder's owner ("" for the unnamed identity, or a folder nobody claimed)."""
        return self.claimed(folder) or ""

    def claimed(self, folder: Path) -> str | None:
        with self._lock:
            return self._owners.get(str(folder))

    def claim(self, folder: Path, owner: str) -> None:
        with self._lock:
            if self._owners.get(str(folder), "") == owner:
                return
            self._owners[str(folder)] = owner
            self.path.parent.mkdir(parents=True, exist_ok=True)
            tmp = self.path.with_name(f".{self.path.name}.{os.getpid()}.tmp")
            tmp.write_text(json.dumps(self._owners, indent=1, sort_keys=True), encoding="utf-8")
            os.replace(tmp, self.path)
