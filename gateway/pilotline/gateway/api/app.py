"""The HTTP API: health, Prometheus metrics, machines, capacity and idle windows.

The app is assembled here from groups of routes (capacity.py, catalog.py, booking.py,
history.py, alerts.py, quarantine.py); each group reads the gateway through its protocol in
ports.py.

Served by uvicorn inside the gateway's own event loop; every handler is ``async`` so it runs in
that loop (never in a thread pool) and reads the core and the SQLite store without locks.
(``/metrics`` reads its figures in the loop too, then writes the text from that copy in a
thread: ``metrics.exposition``.)

Access (``auth.py``): every route but ``/health`` declares who may call it with one of
``OPERATORS``, ``SCRAPERS``, ``OWNERS``, ``EVERYONE`` (or ``allow(Role...)``), either in
``dependencies=[...]`` or as a ``Principal`` parameter when the answer depends on who asks:
an owner sees only its own machines (``who.sees_owner(owner)``), a tenant only offered
capacity, with owner names only where ``owners.<id>.show_to_tenants`` allows. A new route
without a declaration fails ``tests/gateway/test_api_access.py``. The OpenAPI document is at
``/openapi.json`` (a token is needed): each operation has a tag and an ``operationId``
made from its handler's name (``list_machines``: ``listMachines``), its error answers are
documented, all of them ``application/problem+json`` (``problems.py``). Swagger UI and
ReDoc are not served: FastAPI's pages load their scripts from a CDN that a facility's
network may not reach, and would fetch the document without a token; ``/docs`` and
``/redoc`` answer a 404 that says so. The API listens on loopback unless configured
otherwise.

Lists that grow are paged with a cursor (``pages.py``); what clients poll carries an
``ETag`` (``etag.py``).

``serve_api`` puts what no route should see past it in front of the app: a Host it does not
answer to (``hosts.py``), a client that holds connections without sending a request
(``connections.py``), a forwarded client address from a peer that is not a trusted proxy.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from typing import Any, Final

import structlog
import uvicorn
from fastapi import FastAPI
from fastapi.dependencies.utils import get_flat_params
from fastapi.responses import JSONResponse, Response
from fastapi.routing import APIRoute
from prometheus_client import CONTENT_TYPE_LATEST

from pilotline.gateway import __version__
from pilotline.gateway.api import (
    alerts,
    booking,
    capacity,
    catalog,
    feeds,
    history,
    problems,
    quarantine,
    usage,
)
from pilotline.gateway.api.auth import EVERYONE, SCRAPERS, Access, RequestGuard, roles_of
from pilotline.gateway.api.connections import ConnectionGuard, ConnectionLimits, guarded_protocol
from pilotline.gateway.api.hosts import HostGuard
from pilotline.gateway.api.metrics import exposition
from pilotline.gateway.api.ports import Api
from pilotline.gateway.api.timing import RequestTimer
from pilotline.gateway.api.tls import server_context
from pilotline.gateway.board import add_board

log = structlog.get_logger("pilotline.gateway.api")

TAGS: Final = [
    {"name": "service", "description": "Health, Prometheus metrics, this document."},
    {"name": "capacity", "description": "Machines, what is free now, forecasts, the catalog."},
    {"name": "booking", "description": "Offers, reservations and their lifecycle."},
    {"name": "history", "description": "Idle windows and utilization from the store."},
    {"name": "alerts", "description": "Alerts, acknowledgements and silences."},
    {"name": "quarantine", "description": "Inputs the gateway refused, with why."},
]


def operation_id(route: APIRoute) -> str:
    """``list_machines`` -> ``listMachines``: the handler's name says what the call does."""
    first, *rest = route.name.split("_")
    return first + "".join(word.capitalize() for word in rest)


def create_app(gateway: Api) -> FastAPI:
    app = FastAPI(
        title="pilotline",
        version=__version__,
        description="Idle time of industrial equipment as bookable capacity. Every route but "
        "/health needs `Authorization: Bearer TOKEN` (`pilotline token create`).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
        # No redirect for a trailing slash: its Location would be built from the Host header.
        redirect_slashes=False,
        generate_unique_id_function=operation_id,
        openapi_tags=TAGS,
    )
    problems.install(app)
    app.state.access = Access(gateway.store.tokens, gateway.metrics.auth_failures)
    app.add_middleware(RequestGuard)
    # added last, so outermost: it also times the answers RequestGuard gives (413)
    app.add_middleware(RequestTimer, durations=gateway.metrics.api_durations)
    gauges = gateway.gauges()

    @app.get("/health", summary="Each collector and sink, with why when unhealthy. Anyone.",
             tags=["service"], responses={503: {"description": "Something is unhealthy"}})
    async def get_health() -> JSONResponse:
        body = gateway.health()
        return JSONResponse(body, status_code=200 if body["healthy"] else 503)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[EVERYONE])
    async def get_openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(
        "/metrics",
        summary="Prometheus exposition. Operators and scrapers.",
        dependencies=[SCRAPERS],
        tags=["service"],
        response_class=Response,
        responses={200: {"content": {CONTENT_TYPE_LATEST: {"schema": {"type": "string"}}}}},
    )
    async def get_metrics() -> Response:
        text = await exposition(gateway.metrics, gauges)
        return Response(text, media_type=CONTENT_TYPE_LATEST)

    # On the app's own router, not through include_router: FastAPI keeps an included router's
    # routes out of ``app.routes``, where tests/gateway/test_api_access.py checks each one.
    capacity.add_routes(app.router, gateway)
    catalog.add_routes(app.router, gateway)
    booking.add_routes(app.router, gateway)
    usage.add_routes(app.router, gateway)
    feeds.add_routes(app.router, gateway)
    history.add_routes(app.router, gateway)
    alerts.add_routes(app.router, gateway)
    quarantine.add_routes(app.router, gateway)
    # The capacity board (issue 16): HTML pages on the same port, asking these routes in
    # process as the signed-in principal (board/internal.py). Outside the OpenAPI document.

    add_board(app, gateway)
    _document_errors(app)
    _add_problem_schemas(app)
    return app


def _document_errors(app: FastAPI) -> None:
    """Every route's 401/403 (it declares roles) and 422 (it takes parameters) answers, in
    the one error shape; the routes declare their own 404s and 409s."""
    for route in app.routes:
        if not isinstance(route, APIRoute):
            continue
        codes = [413] if route.body_field is not None else []
        if any(roles_of(d) is not None for d in route.dependant.dependencies):
            codes += [401, 403]
        if get_flat_params(route.dependant) or route.body_field is not None:
            codes.append(422)
        for code, answer in problems.responses(*codes).items():
            route.responses.setdefault(code, answer)


def _add_problem_schemas(app: FastAPI) -> None:
    """The schemas those answers refer to: FastAPI adds only the models it sees."""
    generate = app.openapi

    def openapi() -> dict[str, Any]:
        if app.openapi_schema is None:
            schema = generate()  # FastAPI keeps it: later calls answer this same dict
            schema.setdefault("components", {}).setdefault("schemas", {}).update(
                problems.schemas()
            )
        return generate()

    app.openapi = openapi  # type: ignore[method-assign]


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the gateway owns the signals, not uvicorn."""

    def __init__(self, config: uvicorn.Config, listening: asyncio.Event | None) -> None:
        super().__init__(config)
        self._listening = listening

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield

    async def startup(self, sockets: list[socket.socket] | None = None) -> None:
        await super().startup(sockets)
        if self.started and self._listening is not None:
            self._listening.set()  # the gateway may tell systemd it is ready


def bind(address: str) -> socket.socket:
    """Bind the API's socket ourselves: a port in use is a clear OSError, not a sys.exit."""
    host, _, port = address.rpartition(":")
    host = host.strip("[]")
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    sock = socket.socket(family, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    try:
        sock.bind((host, int(port)))
    except OSError as exc:
        sock.close()
        raise OSError(exc.errno, f"the API cannot listen on {address}: {exc.strerror}") from None
    sock.listen(128)
    sock.setblocking(False)
    return sock


async def serve_api(gateway: Api, listening: asyncio.Event | None = None) -> None:
    """Serve until cancelled; ``listening`` is set once requests are answered."""
    settings = gateway.config.api
    # Before binding: unusable certificate files stop the start with the keys that name them.
    tls = server_context(settings)
    sock = bind(settings.listen)
    limits = ConnectionLimits(
        request_timeout_s=settings.request_timeout_s,
        max_connections=settings.max_connections,
        max_per_client=settings.max_connections_per_client,
        shares=lambda peer: not settings.is_trusted_proxy(peer),
    )
    guard = ConnectionGuard(limits, gateway.metrics.api_connections_closed)
    hosts = settings.hosts([socket.gethostname()])
    config = uvicorn.Config(
        HostGuard(create_app(gateway), hosts, gateway.metrics.auth_failures),
        http=guarded_protocol(guard),
        log_config=None,
        access_log=False,  # api.access (auth.py) audits authenticated requests instead
        lifespan="off",
        # The guard bounds connections (so, one request each, requests too); uvicorn's
        # limit_concurrency would count idle connections and answer 503 to everyone.
        limit_concurrency=None,
        timeout_keep_alive=settings.keep_alive_s,
        # X-Forwarded-For/-Proto only from the configured proxies; given explicitly so that
        # uvicorn's default (loopback) and FORWARDED_ALLOW_IPS never apply.
        proxy_headers=bool(settings.trusted_proxies),
        forwarded_allow_ips=list(settings.trusted_proxies),
        server_header=False,
        # Our own context (tls.py): TLS 1.2 at least, files checked with clear errors.
        ssl_context_factory=None if tls is None else lambda _config, _default: tls,
    )
    server = _EmbeddedServer(config, listening)
    log.info(
        "api.listening",
        url=f"{'https' if tls else 'http'}://{settings.listen}",
        client_certificates=settings.tls_client_ca_file is not None,
        openapi="/openapi.json",
        hosts=hosts,
        trusted_proxies=settings.trusted_proxies,
    )
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True  # finish in-flight requests and close the socket
        await serving
        raise
    finally:
        sock.close()
