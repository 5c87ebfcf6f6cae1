"""The worker's TLS certificate files: given ones that cannot be used are one line saying which and why."""

from __future__ import annotations

import shutil

import pytest

from backend.service.tls import TLSError, ensure_self_signed, load_tls, server_context


@pytest.fixture(scope="module")
def two_certificates(tmp_path_factory):
    """Two self-signed certificates and their keys, made as the worker makes its own (openssl)."""
    if shutil.which("openssl") is None:
        pytest.skip("openssl is not installed")
    base = tmp_path_factory.mktemp("tls")
    return [ensure_self_signed(base / name)[:2] for name in ("a", "b")]


def test_a_certificate_and_its_own_key_serve(two_certificates):
    (cert, key), _other = two_certificates
    assert server_context(cert, key) is not None


def test_files_that_cannot_be_used_are_said_plainly(two_certificates, tmp_path):
    (cert_a, key_a), (_cert_b, key_b) = two_certificates
    notes = tmp_path / "notes.txt"
    notes.write_text("my notes\n")
    cases = [
        (cert_a, tmp_path / "missing.pem", f"the TLS key file {tmp_path / 'missing.pem'} does not exist"),
        (tmp_path, key_a, f"the TLS certificate file {tmp_path} does not exist (or is not a file)"),
        (notes, key_a, "one of them is not in PEM form (a PEM file starts with -----BEGIN)"),
        (cert_a, key_b, "the key does not belong to the certificate"),
    ]
    for cert, key, words in cases:
        with pytest.raises(TLSError) as caught:
            server_context(cert, key)
        assert words in str(caught.value) and "\n" not in str(caught.value), str(caught.value)
    with pytest.raises(TLSError, match="does not exist"):
        load_tls(tmp_path / "cert.pem", tmp_path / "key.pem")
    assert notes.read_text() == "my notes\n"
