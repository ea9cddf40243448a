"""Making, opening and closing one asyncua ``Client``, and saying why a session failed.

A fresh client per connection (asyncua's auto-reconnect is off): the collector and
``pilotline browse`` both make theirs here, so both connect with the same identity, security
and trust checks. Refusals and errors become one line an operator can act on.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Final

from asyncua import Client, ua
from asyncua.crypto.security_policies import SecurityPolicyBasic256Sha256

from pilotline.collectors.opcua.config import OpcuaSource
from pilotline.collectors.opcua.errors import OpcuaError
from pilotline.collectors.opcua.security import (
    check_server_trusted,
    client_identity,
    first_certificate,
)

__all__ = [
    "KEEPALIVE_S",
    "REQUEST_TIMEOUT_S",
    "batch_size",
    "close",
    "connect",
    "describe",
    "explain_refusal",
    "make_client",
]

MAX_MONITORED_ITEMS_PER_CALL: Final = ua.NodeId(
    ua.ObjectIds.Server_ServerCapabilities_OperationLimits_MaxMonitoredItemsPerCall
)
REQUEST_TIMEOUT_S: Final = 10.0  # the defaults of the collector and of ``pilotline browse``
KEEPALIVE_S: Final = 5.0  # asyncua's watchdog reads the server state this often
_CLOSE_TIMEOUT_S: Final = 2.0


async def make_client(
    endpoint: str,
    src: OpcuaSource,
    *,
    pki_dir: Path,
    connect_timeout_s: float,
    request_timeout_s: float = REQUEST_TIMEOUT_S,
    keepalive_s: float = KEEPALIVE_S,
) -> Client:
    """A client for ``endpoint`` with ``src``'s security and user, not yet connected.

    With security on, this asks the server for its endpoints and checks its certificate
    against the trust list first (raises ``UntrustedServerError``)."""
    client = Client(endpoint, timeout=request_timeout_s, watchdog_intervall=keepalive_s)
    client.name = client.description = "pilotline gateway"
    client.product_uri = "urn:pilotline"
    client.session_timeout = 120_000
    if src.secure:
        identity = client_identity(pki_dir, src.certificate_file, src.private_key_file)
        client.application_uri = identity.application_uri
        mode = getattr(ua.MessageSecurityMode, src.security_mode)
        async with asyncio.timeout(connect_timeout_s):  # not wait_for: see connect()
            endpoints = await client.connect_and_get_server_endpoints()
        try:
            ep = Client.find_endpoint(endpoints, mode, SecurityPolicyBasic256Sha256.URI)
        except ua.UaError:
            offered = sorted(
                {
                    f"{e.SecurityPolicyUri.rsplit('#', 1)[-1]}/{e.SecurityMode.name}"
                    for e in endpoints
                }
            )
            raise OpcuaError(
                f"{endpoint} offers no Basic256Sha256/{src.security_mode} endpoint "
                f"(offered: {', '.join(offered)})"
            ) from None
        server_der = first_certificate(ep.ServerCertificate or b"")
        check_server_trusted(
            endpoint,
            server_der,
            pki_dir=pki_dir,
            trust_dir=src.trust_dir,
            pinned=src.server_certificate_file,
        )
        await client.set_security(
            SecurityPolicyBasic256Sha256,
            str(identity.certificate),
            str(identity.private_key),
            server_certificate=server_der,
            mode=mode,
        )
    if src.username is not None:
        client.set_user(src.username)
        password = src.password()
        if password is not None:
            client.set_password(password)
    return client


async def connect(client: Client, endpoint: str, src: OpcuaSource, timeout_s: float) -> None:
    """Open the session; a timeout or a refusal raises ``OpcuaError`` saying why."""
    try:
        # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation that
        # comes as the session opens (gh-86296), and the reconnect loop then never stops
        async with asyncio.timeout(timeout_s):
            await client.connect()
    except TimeoutError:
        raise OpcuaError(f"no session with {endpoint} within {timeout_s:g} s") from None
    except ua.UaStatusCodeError as exc:
        raise OpcuaError(explain_refusal(exc, src)) from exc


async def batch_size(client: Client, max_items_per_call: int) -> int:
    """Monitored items per call: ours, lowered to the server's MaxMonitoredItemsPerCall."""
    try:
        limit = await client.get_node(MAX_MONITORED_ITEMS_PER_CALL).read_value()
    except (ua.UaError, TimeoutError, OSError):
        return max_items_per_call
    if isinstance(limit, int) and limit > 0:
        return min(max_items_per_call, limit)
    return max_items_per_call


async def close(client: Client) -> None:
    try:
        async with asyncio.timeout(_CLOSE_TIMEOUT_S):
            await client.disconnect()
    except (Exception, asyncio.CancelledError):  # noqa: BLE001 - tearing down a dead link
        client.disconnect_socket()


def describe(exc: BaseException) -> str:
    if isinstance(exc, ua.UaStatusCodeError):
        return f"{type(exc).__name__}: {exc}"
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def explain_refusal(exc: ua.UaStatusCodeError, source: OpcuaSource) -> str:
    code = getattr(exc, "code", None)
    hint = ""
    if code in (
        ua.StatusCodes.BadCertificateUntrusted,
        ua.StatusCodes.BadSecurityChecksFailed,
        ua.StatusCodes.BadCertificateInvalid,
    ):
        hint = (
            ": the server does not trust pilotline's client certificate; add it to the "
            "server's trusted certificates"
        )
    elif code in (ua.StatusCodes.BadIdentityTokenRejected, ua.StatusCodes.BadUserAccessDenied):
        hint = f": check username {source.username!r} and its password"
    return f"session refused: {describe(exc)}{hint}"
