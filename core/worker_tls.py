# SPDX-License-Identifier: GPL-3.0-or-later
"""TLS to a remote worker, trusted by a pinned certificate fingerprint (no certificate authority).

The worker makes a self-signed certificate and prints its SHA-256 fingerprint; the artist pastes
it into the preferences, or accepts the one shown once. Standard library only, no ``bpy``.
"""

import hashlib
import ipaddress
import socket
import ssl

from ..protocol.wire import normalize_fingerprint


class WorkerClientError(RuntimeError):
    """The worker cannot be reached: not started, exited, or disconnected."""


class CertificateError(WorkerClientError):
    """The worker's TLS certificate is not the pinned one; ``fingerprint`` is the one it showed."""

    def __init__(self, message, fingerprint):
        super().__init__(message)
        self.fingerprint = fingerprint


class UnknownCertificate(CertificateError):
    """No fingerprint is pinned: the artist may accept ``fingerprint`` once (and pin it)."""


def is_loopback_host(host):
    try:
        addresses = {info[4][0] for info in socket.getaddrinfo(host, None)}
        return bool(addresses) and all(ipaddress.ip_address(a.split("%")[0]).is_loopback for a in addresses)
    except (OSError, ValueError, UnicodeError):
        return False


def client_context():
    """TLS 1.2 or later, no certificate-authority check: `check_certificate` compares the fingerprint."""
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    context.check_hostname = False
    context.verify_mode = ssl.CERT_NONE
    return context


def check_certificate(sock, pinned, where):
    """Raise `CertificateError` unless the TLS socket's certificate has the ``pinned`` fingerprint."""
    seen = normalize_fingerprint(hashlib.sha256(sock.getpeercert(binary_form=True) or b"").hexdigest())
    if not pinned:
        raise UnknownCertificate(
            "the worker at {:s} shows the certificate {:s}: accept it once (compare it with the one the worker "
            "printed) or paste that fingerprint".format(where, seen), seen)
    if seen != pinned:
        raise CertificateError(
            "refused: the worker at {:s} shows certificate {:s}, not the pinned {:s}".format(where, seen, pinned), seen)


def peek_fingerprint(host, port, timeout=5.0):
    """The SHA-256 fingerprint of the certificate a TLS worker shows, read from a handshake only
    (nothing is sent: no token goes to a worker not yet trusted). Raises OSError when unreachable."""
    with socket.create_connection((host, int(port)), timeout=timeout) as raw:
        with client_context().wrap_socket(raw) as sock:
            return normalize_fingerprint(hashlib.sha256(sock.getpeercert(binary_form=True) or b"").hexdigest())
