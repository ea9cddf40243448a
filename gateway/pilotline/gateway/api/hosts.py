"""The Host headers the API answers to: others get 400, before any route runs.

A page on another site whose name is made to resolve to the gateway (DNS rebinding) reaches
the API from the operator's own browser with that name as its Host; a Host that is
reflected (a redirect's ``Location``, a link) sends a client elsewhere. The API has no
redirects (``redirect_slashes=False``), and answers only to the hosts of ``api.hosts()``
(gateway/api/config.py). Refusals are counted as ``pilotline_auth_failures_total
{reason="host"}`` and logged as ``api.host_refused``, without echoing the header in the
answer.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Final

import structlog

from pilotline.gateway.api.auth import ASGIApp, Receive, Scope, Send, header
from pilotline.gateway.api.problems import send_problem

__all__ = ["HostGuard", "host_of"]

log = structlog.get_logger("pilotline.gateway.auth")

# host[:port], the host a name or an IPv4 address, or an IPv6 address in brackets.
_HOST_RE: Final = re.compile(r"(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9._-]+)(?::[0-9]{1,5})?")


def host_of(value: str | None) -> str | None:
    """The host of a Host header, lower case, without port or final dot; None if malformed."""
    if value is None:
        return None
    match = _HOST_RE.fullmatch(value.strip())
    if match is None:
        return None
    return match.group(1).lower().rstrip(".")


class HostGuard:
    """ASGI middleware: the request's Host must be one of ``hosts`` (``*.domain``: any name
    under the domain; ``*``: any host at all)."""

    def __init__(self, app: ASGIApp, hosts: Iterable[str], refused: Counter[str]) -> None:
        self.app = app
        allowed = [h.lower() for h in hosts]
        self.any = "*" in allowed
        self.exact = frozenset(h for h in allowed if not h.startswith("*."))
        self.suffixes = tuple(h[1:] for h in allowed if h.startswith("*."))
        self.refused = refused

    def allows(self, host: str | None) -> bool:
        if self.any:
            return True
        if host is None:
            return False
        return host in self.exact or host.endswith(self.suffixes)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or self.allows(host_of(header(scope, b"host"))):
            await self.app(scope, receive, send)
            return
        self.refused["host"] += 1
        client = scope.get("client")
        log.warning(
            "api.host_refused",
            host=(header(scope, b"host") or "")[:100],
            method=scope.get("method"),
            client=client[0] if client else None,
        )
        await send_problem(send, 400, "this API does not answer to that Host (api.allowed_hosts)")
