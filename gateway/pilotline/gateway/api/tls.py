"""The API's TLS: the server context built from ``api.tls_*`` files, or a clear refusal.

Built here rather than by uvicorn from file names so that a certificate that does not parse,
a key that does not match it or an unreadable file stops the gateway at start with the key
that names it (``gateway.start_failed``), and so that the protocol floor is ours: TLS 1.2.
With ``tls_client_ca_file`` every client must present a certificate from that CA (mutual
TLS); the bearer token is still required on top of it.
"""

from __future__ import annotations

import contextlib
import ssl
from collections.abc import Iterator

from pilotline.gateway.api.config import ApiConfig

__all__ = ["TlsFilesError", "server_context"]


class TlsFilesError(OSError):
    """The API's certificate, key or client CA cannot be used (an OSError: the gateway
    reports it as a start failure, like a port in use)."""


def server_context(api: ApiConfig) -> ssl.SSLContext | None:
    """The SSL context the API serves with; None when ``api`` has no certificate."""
    if api.tls_cert_file is None or api.tls_key_file is None:
        return None
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    context.minimum_version = ssl.TLSVersion.TLSv1_2
    where = f"api.tls_cert_file ({api.tls_cert_file}), api.tls_key_file ({api.tls_key_file})"
    with _refusing(where, "not a PEM certificate with its matching, unencrypted private key"):
        context.load_cert_chain(api.tls_cert_file, api.tls_key_file)
    if api.tls_client_ca_file is not None:
        where = f"api.tls_client_ca_file ({api.tls_client_ca_file})"
        with _refusing(where, "no PEM CA certificate in it"):
            context.load_verify_locations(cafile=api.tls_client_ca_file)
        context.verify_mode = ssl.CERT_REQUIRED
    return context


@contextlib.contextmanager
def _refusing(where: str, unusable: str) -> Iterator[None]:
    """ssl's errors (``[SSL] PEM lib (_ssl.c:3900)``) turned into one naming the keys."""
    try:
        yield
    except FileNotFoundError:
        raise TlsFilesError(f"{where}: file not found") from None
    except PermissionError:
        raise TlsFilesError(f"{where}: not readable by this user") from None
    except ssl.SSLError as exc:
        # OpenSSL's reason (KEY_VALUES_MISMATCH) when it has one; "PEM lib (_ssl.c:3905)" not
        detail = f" ({exc.reason.lower().replace('_', ' ')})" if exc.reason else ""
        raise TlsFilesError(f"{where}: {unusable}{detail}") from None
