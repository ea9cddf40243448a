"""Client certificate (generated once, kept) and the trust list for server certificates.

Layout of the PKI directory (``pki_dir``, kept across restarts)::

    own/cert.der       the client certificate pilotline generated, valid 20 years
    own/key.pem        its private key (mode 0600)
    trusted/           server certificates trusted by default (DER or PEM)
    rejected/          server certificates refused, saved so that trusting one is a copy

The client certificate is generated only when ``own/`` holds none, and never replaced, so a
server that trusts it keeps trusting it across gateway restarts. Its ApplicationUri
(``urn:pilotline:<host>:gateway``) is also the client's, as OPC UA servers check.
"""

from __future__ import annotations

import hashlib
import os
import socket
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from asyncua.crypto import cert_gen
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from pilotline.collectors.opcua.errors import SecurityConfigError, UntrustedServerError

__all__ = [
    "ClientIdentity",
    "check_server_trusted",
    "client_identity",
    "fingerprint",
    "first_certificate",
    "load_certificate",
]

CERT_DAYS: Final = 20 * 365
_CERT_SUFFIXES: Final = (".der", ".pem", ".crt", ".cer")


@dataclass(frozen=True, slots=True)
class ClientIdentity:
    certificate: Path
    private_key: Path
    application_uri: str


def default_application_uri() -> str:
    return f"urn:pilotline:{socket.gethostname()}:gateway"


def load_certificate(data: bytes) -> x509.Certificate:
    if data.lstrip().startswith(b"-----BEGIN"):
        return x509.load_pem_x509_certificate(data)
    return x509.load_der_x509_certificate(first_certificate(data))


def first_certificate(der: bytes) -> bytes:
    """The first certificate of a DER chain (servers may send their chain)."""
    if len(der) < 4 or der[0] != 0x30 or der[1] != 0x82:
        return der
    return der[: int.from_bytes(der[2:4], "big") + 4]


def fingerprint(cert: x509.Certificate) -> str:
    digest = hashlib.sha256(cert.public_bytes(serialization.Encoding.DER)).hexdigest()
    return ":".join(digest[i : i + 2] for i in range(0, len(digest), 2))


def _application_uri(cert: x509.Certificate) -> str | None:
    try:
        san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    except x509.ExtensionNotFound:
        return None
    uris = san.get_values_for_type(x509.UniformResourceIdentifier)
    return uris[0] if uris else None


def client_identity(
    pki_dir: Path, certificate_file: Path | None = None, private_key_file: Path | None = None
) -> ClientIdentity:
    """The certificate and key to present: the configured files, or pilotline's own.

    Raises SecurityConfigError when a file cannot be read or the certificate has expired.
    """
    if certificate_file is not None and private_key_file is not None:
        try:
            cert = load_certificate(certificate_file.read_bytes())
        except (OSError, ValueError) as exc:
            raise SecurityConfigError(f"certificate_file {certificate_file}: {exc}") from exc
        if not private_key_file.is_file():
            raise SecurityConfigError(f"private_key_file {private_key_file} is not a file")
        _check_validity(cert, certificate_file)
        uri = _application_uri(cert)
        if uri is None:
            raise SecurityConfigError(
                f"certificate_file {certificate_file} has no URI in its SubjectAltName: OPC UA "
                "needs the client's ApplicationUri there"
            )
        return ClientIdentity(certificate_file, private_key_file, uri)
    own = pki_dir / "own"
    cert_path, key_path = own / "cert.der", own / "key.pem"
    if not cert_path.is_file() or not key_path.is_file():
        _generate(cert_path, key_path, default_application_uri())
    try:
        cert = load_certificate(cert_path.read_bytes())
    except (OSError, ValueError) as exc:
        raise SecurityConfigError(f"{cert_path}: {exc}") from exc
    _check_validity(cert, cert_path)
    return ClientIdentity(cert_path, key_path, _application_uri(cert) or default_application_uri())


def _check_validity(cert: x509.Certificate, path: Path) -> None:
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SecurityConfigError(
            f"certificate {path} is valid from {cert.not_valid_before_utc:%Y-%m-%d} to "
            f"{cert.not_valid_after_utc:%Y-%m-%d}, not now"
        )


def _generate(cert_path: Path, key_path: Path, uri: str) -> None:
    cert_path.parent.mkdir(parents=True, exist_ok=True)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    host = socket.gethostname()
    cert = cert_gen.generate_self_signed_app_certificate(
        key,
        uri,
        {"organizationName": "pilotline"},
        [x509.UniformResourceIdentifier(uri), x509.DNSName(host)],
        extended=[ExtendedKeyUsageOID.CLIENT_AUTH],
        days=CERT_DAYS,
    )
    fd = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(cert_gen.dump_private_key_as_pem(key))
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.DER))


def _trusted_fingerprints(trust_dir: Path | None, pinned: Path | None) -> set[str]:
    found: set[str] = set()
    files = []
    if pinned is not None:
        files.append(pinned)
    if trust_dir is not None and trust_dir.is_dir():
        files.extend(sorted(p for p in trust_dir.iterdir() if p.suffix.lower() in _CERT_SUFFIXES))
    for path in files:
        try:
            found.add(fingerprint(load_certificate(path.read_bytes())))
        except (OSError, ValueError):
            continue  # an unreadable file trusts nothing
    return found


def check_server_trusted(
    endpoint: str,
    server_der: bytes,
    *,
    pki_dir: Path,
    trust_dir: Path | None,
    pinned: Path | None,
) -> x509.Certificate:
    """The server certificate, if trusted; else save it in ``rejected/`` and raise.

    Trusted means: the same certificate (by SHA-256) as ``pinned`` or as a file in
    ``trust_dir`` (default ``pki_dir/trusted``). Raises UntrustedServerError.
    """
    cert = load_certificate(server_der)
    trust = trust_dir if trust_dir is not None else pki_dir / "trusted"
    if pinned is None:
        trust.mkdir(parents=True, exist_ok=True)
    print_ = fingerprint(cert)
    if print_ in _trusted_fingerprints(trust, pinned):
        return cert
    rejected = pki_dir / "rejected"
    rejected.mkdir(parents=True, exist_ok=True)
    name = cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)
    common = str(name[0].value) if name else "server"
    safe = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in common)[:60]
    saved = rejected / f"{safe}-{print_.replace(':', '')[:16]}.der"
    saved.write_bytes(cert.public_bytes(serialization.Encoding.DER))
    raise UntrustedServerError(endpoint, cert.subject.rfc4514_string(), print_, saved, trust)
