"""How `serve --listen` is secured: TLS and the token, decided before the model is touched.

Recipe (`tcp_security`):
1. Off loopback, or with `--tls`, connections are TLS: the user's certificate, or a self-signed
   one made on first start; its SHA-256 fingerprint is printed for the add-on to pin.
2. The token: the one given (at least MIN_TOKEN_CHARS characters), or for TLS a new strong
   one, printed once, unless the artists' named tokens (`--tokens`) are used. A loopback listen
   without TLS may go without (the local case).
"""

from __future__ import annotations

import secrets
import ssl
from dataclasses import dataclass
from pathlib import Path

from .jobs import log
from .serve import MIN_TOKEN_CHARS, is_loopback
from .tls import TLSError, load_tls


@dataclass
class TcpSecurity:
    token: str | None
    tls: ssl.SSLContext | None
    fingerprint: str = ""


def tcp_security(host: str, token: str | None, want_tls: bool, cert: Path | None, key: Path | None,
                 tls_dir: Path | None = None, named_tokens: bool = False) -> TcpSecurity:
    """The listen's TLS context and token; ValueError (one line) when they cannot be had."""
    loopback = is_loopback(host)
    if token is not None and len(token) < MIN_TOKEN_CHARS:
        raise ValueError(f"the token must be at least {MIN_TOKEN_CHARS} characters (leave --token out and a strong "
                         "one is generated)")
    use_tls = want_tls or not loopback or cert is not None
    if not use_tls:
        return TcpSecurity(token, None)
    try:
        context, fingerprint, origin = load_tls(cert, key, tls_dir)
    except TLSError as exc:
        raise ValueError(str(exc)) from None
    log(origin)
    log(f"TLS certificate SHA-256 fingerprint: {fingerprint}")
    if token is None and not named_tokens:  # with a tokens file, each artist has their own
        token = secrets.token_urlsafe(32)
        log(f"token (generated now, shown only this once; give it to the add-on): {token}")
    return TcpSecurity(token, context, fingerprint)
