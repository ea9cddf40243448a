"""Who may call which route: bearer tokens, roles, failures counted, use audited.

Every route but ``/health`` declares the roles that may call it with one dependency::

    @app.get("/api/things", dependencies=[OPERATORS])           # the role is enough
    async def things(who: Annotated[Principal, EVERYONE]) -> ...  # ... or scope by principal

``allow(*roles)`` authenticates the ``Authorization: Bearer`` token against the hashed tokens
in the embedded store (``tokens.py``) and refuses with 401 (no, malformed, unknown or revoked
token; ``WWW-Authenticate: Bearer``) or 403 (a valid token whose role may not call the
route). Each refusal is counted in ``pilotline_auth_failures_total{reason}`` and logged as
``api.auth_failed`` without the token. A route whose answer depends on who asks takes the
``Principal`` and filters with ``Principal.sees_owner``; ``tests/gateway/test_api_access.py``
calls every route as every principal and fails for a route that declares no roles.

``RequestGuard`` (ASGI middleware) bounds request bodies (413 above ``MAX_BODY_BYTES``, a
problem+json answer like every other refusal: ``problems.py``) and
writes one ``api.access`` audit line per authenticated request: principal, role, method,
route template, status and client address (the peer's, or what a trusted proxy forwarded:
``api.trusted_proxies``).
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Annotated, Any, Final

import structlog
from fastapi import Depends, HTTPException, Request
from fastapi.params import Depends as DependsParam
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pilotline.gateway.api.problems import send_problem
from pilotline.gateway.store.tokens import Principal, Role, TokenRegistry

__all__ = [
    "EVERYONE",
    "IN_PROCESS_PRINCIPAL",
    "MAX_BODY_BYTES",
    "OPERATORS",
    "OWNERS",
    "SCRAPERS",
    "Access",
    "Allow",
    "Principal",
    "RequestGuard",
    "Role",
    "allow",
    "header",
]

log = structlog.get_logger("pilotline.gateway.auth")

MAX_BODY_BYTES: Final = 64 * 1024
PRINCIPAL_KEY: Final = "pilotline.principal"
IN_PROCESS_PRINCIPAL: Final = "pilotline.in_process_principal"
"""An ASGI scope key the board (board/internal.py) sets when it asks the API in process as a
signed-in principal: taken instead of a bearer token. Only server code builds a scope; no
header or query a client sends can set it."""

_bearer = HTTPBearer(
    auto_error=False,
    scheme_name="token",
    description="An API token from `pilotline token create` (operator, owner, tenant, scraper).",
)


class Access:
    """What the dependency needs at request time; kept on ``app.state.access``."""

    def __init__(self, tokens: Callable[[], TokenRegistry], failures: Counter[str]) -> None:
        self._tokens = tokens
        self.failures = failures

    def refuse(self, request: Request, status: int, reason: str, detail: str) -> HTTPException:
        self.failures[reason] += 1
        log.warning(
            "api.auth_failed",
            reason=reason,
            method=request.method,
            route=_route(request),
            client=request.client.host if request.client else None,
        )
        headers = {"WWW-Authenticate": "Bearer"} if status == 401 else None
        return HTTPException(status, detail, headers=headers)

    def authenticate(
        self, request: Request, credentials: HTTPAuthorizationCredentials | None
    ) -> Principal:
        if credentials is None:
            if "authorization" in request.headers:
                raise self.refuse(request, 401, "malformed", "use Authorization: Bearer TOKEN")
            raise self.refuse(request, 401, "missing", "this route needs a bearer token")
        principal, reason = self._tokens().authenticate(credentials.credentials)
        if principal is None:
            raise self.refuse(request, 401, reason, "invalid or revoked token")
        return principal


class Allow:
    """The dependency ``allow(*roles)`` returns; ``roles`` is what the access table reads."""

    def __init__(self, roles: frozenset[Role]) -> None:
        self.roles = roles

    async def __call__(
        self,
        request: Request,
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> Principal:
        access: Access = request.app.state.access
        signed_in = request.scope.get(IN_PROCESS_PRINCIPAL)
        principal = (
            signed_in if isinstance(signed_in, Principal)
            else access.authenticate(request, credentials)
        )
        request.scope[PRINCIPAL_KEY] = principal
        if principal.role not in self.roles:
            raise access.refuse(
                request, 403, "forbidden", f"a {principal.role} token may not call this route"
            )
        return principal


def allow(*roles: Role) -> Any:
    """``Depends(...)`` for a route that these roles may call (operators always may)."""
    return Depends(Allow(frozenset({Role.OPERATOR, *roles})))


def roles_of(dependency: object) -> frozenset[Role] | None:
    """The roles an ``allow(...)`` dependency admits (given as ``Depends`` or as a route's
    ``Dependant``), or None for anything else."""
    call = dependency.dependency if isinstance(dependency, DependsParam) else dependency
    call = getattr(call, "call", call)
    return call.roles if isinstance(call, Allow) else None


OPERATORS: Final = allow()
SCRAPERS: Final = allow(Role.SCRAPER)
OWNERS: Final = allow(Role.OWNER)
EVERYONE: Final = allow(Role.OWNER, Role.TENANT)
"""Operators, owners and tenants (not scrapers: they read /metrics only)."""


def _route(request: Request) -> str:
    route = request.scope.get("route")
    path = getattr(route, "path", None)
    return path if isinstance(path, str) else request.url.path


Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]
ASGIApp = Callable[[Scope, Receive, Send], Awaitable[None]]


class RequestGuard:
    """ASGI middleware: bounded request bodies, and one audit line per authenticated call."""

    def __init__(self, app: ASGIApp, max_body_bytes: int = MAX_BODY_BYTES) -> None:
        self.app = app
        self.max_body_bytes = max_body_bytes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        length = header(scope, b"content-length")
        if length is not None and (not length.isdigit() or int(length) > self.max_body_bytes):
            await send_problem(
                send, 413, f"request body larger than {self.max_body_bytes} bytes",
                scope.get("path"),
            )
            return
        status = 500
        received = 0

        async def counted_receive() -> Message:
            nonlocal received
            message = await receive()
            if message["type"] == "http.request":
                received += len(message.get("body", b""))
                if received > self.max_body_bytes:  # chunked, without a Content-Length
                    return {"type": "http.disconnect"}
            return message

        async def watched_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = int(message["status"])
            await send(message)

        try:
            await self.app(scope, counted_receive, watched_send)
        finally:
            principal = scope.get(PRINCIPAL_KEY)
            if isinstance(principal, Principal):
                route = scope.get("route")
                client = scope.get("client")
                log.info(
                    "api.access",
                    principal=principal.name,
                    role=principal.role.value,
                    subject=principal.subject,
                    method=scope.get("method"),
                    route=getattr(route, "path", scope.get("path")),
                    status=status,
                    client=client[0] if client else None,
                )


def header(scope: Scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", ()):
        if key.lower() == name:
            return bytes(value).decode("latin-1").strip()
    return None
