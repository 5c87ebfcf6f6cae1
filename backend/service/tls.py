"""The worker's TLS: its certificate (the user's own, or a self-signed one made on first start) and
the server context every TCP connection off loopback is wrapped in.

The self-signed certificate is made with the `openssl` command line (the standard library cannot
make keys or certificates, and the backend's packages do not include `cryptography`); it is kept
in the worker's configuration folder so its fingerprint stays the same across restarts: the
add-on pins that SHA-256 fingerprint instead of trusting a certificate authority.
"""

from __future__ import annotations

import hashlib
import os
import shutil
import socket
import ssl
import subprocess
from pathlib import Path

CERT_NAME = "worker-cert.pem"
KEY_NAME = "worker-key.pem"
CERT_DAYS = 3650  # pinned by fingerprint, not trusted by date: a short life would only break pins
OPENSSL_TIMEOUT_S = 60.0


class TLSError(RuntimeError):
    """The worker cannot set up TLS; the message is one line for the user."""


def default_tls_dir() -> Path:
    """Where the self-signed certificate and its key live (a configuration folder, not a cache:
    a wiped cache would change the fingerprint every add-on has pinned)."""
    if os.name == "nt":
        base = Path(os.environ.get("APPDATA", Path.home() / "AppData" / "Roaming"))
    else:
        base = Path(os.environ.get("XDG_CONFIG_HOME") or Path.home() / ".config")
    return base / "scail2" / "worker-tls"


def fingerprint(der: bytes) -> str:
    """The SHA-256 fingerprint of a DER certificate as `AB:CD:...` (what `openssl x509 -fingerprint` prints)."""
    digest = hashlib.sha256(der).hexdigest().upper()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def certificate_fingerprint(cert_path: Path) -> str:
    try:
        der = ssl.PEM_cert_to_DER_cert(Path(cert_path).read_text(encoding="ascii"))
    except (OSError, ValueError) as exc:
        raise TLSError(f"cannot read the certificate {cert_path}: {exc}") from None
    return fingerprint(der)


def ensure_self_signed(folder: Path) -> tuple[Path, Path, bool]:
    """The certificate and key in `folder`, made now if absent; (cert, key, made_now)."""
    folder = Path(folder)
    cert, key = folder / CERT_NAME, folder / KEY_NAME
    if cert.is_file() and key.is_file():
        return cert, key, False
    openssl = shutil.which("openssl")
    if openssl is None:
        raise TLSError("cannot make a TLS certificate: the `openssl` program is not installed; install it or give "
                       "--tls-cert and --tls-key")
    try:
        folder.mkdir(parents=True, exist_ok=True, mode=0o700)
        os.chmod(folder, 0o700)
    except OSError as exc:
        raise TLSError(f"cannot create {folder}: {exc.strerror or exc}") from None
    # Written beside the final names and renamed, so a killed start never leaves half a pair.
    tmp_cert, tmp_key = folder / f".{CERT_NAME}.{os.getpid()}.tmp", folder / f".{KEY_NAME}.{os.getpid()}.tmp"
    host = socket.gethostname() or "scail2-worker"
    command = [openssl, "req", "-x509", "-newkey", "ec", "-pkeyopt", "ec_paramgen_curve:prime256v1", "-nodes",
               "-keyout", str(tmp_key), "-out", str(tmp_cert), "-days", str(CERT_DAYS),
               "-subj", f"/CN=SCAIL-2 worker {host}"[:64]]
    old_umask = os.umask(0o077)  # the key is readable by its owner only, from its first byte
    try:
        result = subprocess.run(command, capture_output=True, text=True, timeout=OPENSSL_TIMEOUT_S,
                                stdin=subprocess.DEVNULL)
    except (OSError, subprocess.TimeoutExpired) as exc:
        raise TLSError(f"cannot run openssl to make a certificate: {exc}") from None
    finally:
        os.umask(old_umask)
    if result.returncode != 0 or not tmp_cert.is_file() or not tmp_key.is_file():
        for path in (tmp_cert, tmp_key):
            path.unlink(missing_ok=True)
        last = (result.stderr.strip().splitlines() or ["no output"])[-1]
        raise TLSError(f"openssl could not make a certificate: {last}")
    os.replace(tmp_key, key)
    os.replace(tmp_cert, cert)
    return cert, key, True


def server_context(cert: Path, key: Path) -> ssl.SSLContext:
    """TLS 1.2 or later with the given certificate; clients are not asked for one (the token authenticates)."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    for what, path in (("certificate", cert), ("key", key)):
        if not Path(path).is_file():
            raise TLSError(f"the TLS {what} file {path} does not exist (or is not a file): give --tls-cert and "
                           "--tls-key files in PEM form, or neither for a self-signed certificate of the worker's own")
    try:
        context.load_cert_chain(str(cert), str(key))
    except ssl.SSLError as exc:  # OpenSSL's words ("PEM lib", "KEY_VALUES_MISMATCH") said for an artist
        reason = ("the key does not belong to the certificate" if "MISMATCH" in str(exc) else
                  "one of them is not in PEM form (a PEM file starts with -----BEGIN)")
        raise TLSError(f"cannot use the certificate {cert} with the key {key}: {reason}") from None
    except OSError as exc:
        raise TLSError(f"cannot use the certificate {cert} with the key {key}: {exc.strerror or exc}") from None
    return context


def load_tls(cert: Path | None, key: Path | None, folder: Path | None = None) -> tuple[ssl.SSLContext, str, str]:
    """(context, fingerprint, a line saying where the certificate came from) for the worker's listen."""
    if (cert is None) != (key is None):
        raise TLSError("give both --tls-cert and --tls-key, or neither (a self-signed certificate is made)")
    if cert is None:
        cert, key, made = ensure_self_signed(folder or default_tls_dir())
        origin = f"{'made a new' if made else 'using the'} self-signed certificate {cert}"
    else:
        origin = f"using the certificate {cert}"
    return server_context(cert, key), certificate_fingerprint(cert), origin
