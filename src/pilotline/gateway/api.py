"""The HTTP API: health, Prometheus metrics, machines, capacity and idle windows.

Served by uvicorn inside the gateway's own event loop; every handler is ``async`` so it runs in
that loop (never in a thread pool) and reads the core and the SQLite store without locks.
OpenAPI is at ``/docs`` and ``/openapi.json``. Access control per
principal arrives with the security issue; until then the API listens on loopback by default.
"""

from __future__ import annotations

import asyncio
import contextlib
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any

import structlog
import uvicorn
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel

from pilotline import __version__
from pilotline.gateway.metrics import registry
from pilotline.rules import State

if TYPE_CHECKING:
    from pilotline.gateway.service import Gateway

log = structlog.get_logger("pilotline.gateway.api")

DAY_MS = 86_400_000


def iso(ms: int | None) -> str | None:
    if ms is None:
        return None
    return datetime.fromtimestamp(ms / 1000, tz=UTC).isoformat(timespec="milliseconds")


def parse_time(text: str) -> int:
    """Epoch milliseconds or ISO 8601 (with a zone) to epoch milliseconds."""
    if text.lstrip("-").isdigit():
        return int(text)
    try:
        parsed = datetime.fromisoformat(text)
    except ValueError:
        raise HTTPException(422, f"not a time: {text!r} (epoch ms or ISO 8601)") from None
    if parsed.tzinfo is None:
        raise HTTPException(422, f"{text!r} has no time zone; add Z or an offset")
    return int(parsed.timestamp() * 1000)


class MachineOut(BaseModel):
    id: str
    zone: str
    owner: str
    capabilities: list[str]
    state: str
    state_code: int
    since: str | None
    pending: str | None
    last_seen: str | None
    idle_since: str | None
    idle_for_s: float
    available: bool


class CapacityOut(BaseModel):
    machine: str
    zone: str
    owner: str
    capabilities: list[str]
    idle_since: str | None
    available_since: str | None
    idle_for_s: float
    offered: bool


class CapacityAnswer(BaseModel):
    at: str | None
    available: list[CapacityOut]
    idle_not_yet_available: list[CapacityOut]
    machines: int


class WindowOut(BaseModel):
    machine: str
    zone: str
    start: str | None
    end: str | None
    start_ms: int
    end_ms: int | None
    duration_s: float | None
    offered: bool | None
    open: bool


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="pilotline",
        version=__version__,
        description="Idle time of industrial equipment as bookable capacity.",
    )
    metrics_registry = registry(gateway.metrics, gateway.gauges())
    min_idle_ms = {m.id: m.min_idle_ms for m in gateway.plant_spec.machines}

    @app.get("/health", summary="Each collector and sink, with why when unhealthy. Anyone.")
    async def health() -> JSONResponse:
        body = gateway.health()
        return JSONResponse(body, status_code=200 if body["healthy"] else 503)

    @app.get("/metrics", summary="Prometheus exposition. Operators and scrapers.")
    async def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/machines", summary="Every machine's current state. Operators.")
    async def machines() -> list[MachineOut]:
        return [
            MachineOut(
                id=v.id,
                zone=v.zone,
                owner=v.owner,
                capabilities=list(v.capabilities),
                state=v.state.value,
                state_code=v.state.code,
                since=iso(v.since_ms),
                pending=v.pending.value if v.pending else None,
                last_seen=iso(v.last_seen_ms),
                idle_since=iso(v.window_start_ms),
                idle_for_s=v.idle_for_s,
                available=v.available,
            )
            for v in gateway.plant.view()
        ]

    @app.get("/api/capacity", summary="What is free now, by zone and capability. Everyone.")
    async def capacity(
        zone: Annotated[str | None, Query(max_length=64)] = None,
        capability: Annotated[str | None, Query(max_length=64)] = None,
    ) -> CapacityAnswer:
        available: list[CapacityOut] = []
        waiting: list[CapacityOut] = []
        count = 0
        for v in gateway.plant.view():
            if zone is not None and v.zone != zone:
                continue
            if capability is not None and capability not in v.capabilities:
                continue
            count += 1
            if v.state is not State.IDLE or v.window_start_ms is None:
                continue
            item = CapacityOut(
                machine=v.id,
                zone=v.zone,
                owner=v.owner,
                capabilities=list(v.capabilities),
                idle_since=iso(v.window_start_ms),
                available_since=iso(v.window_start_ms + min_idle_ms[v.id]),
                idle_for_s=v.idle_for_s,
                offered=v.available,
            )
            (available if v.available else waiting).append(item)
        available.sort(key=lambda c: -c.idle_for_s)
        return CapacityAnswer(
            at=iso(gateway.plant.now_ms),
            available=available,
            idle_not_yet_available=waiting,
            machines=count,
        )

    @app.get("/api/windows", summary="Idle windows since a time, newest first. Operators.")
    async def windows(
        since: Annotated[str | None, Query(description="epoch ms or ISO 8601")] = None,
        machine: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[WindowOut]:
        since_ms = parse_time(since) if since else gateway.clock_ms() - DAY_MS
        rows = gateway.store.windows(since_ms, machine=machine, limit=limit)
        return [_window(row) for row in rows]

    @app.get("/api/quarantine", summary="The latest rejected inputs, with reasons. Operators.")
    async def quarantine(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        rows = gateway.store.quarantine(limit)
        for row in rows:
            head = row.get("head")
            if isinstance(head, bytes):
                row["head"] = head.decode("utf-8", "backslashreplace")
        return rows

    return app


def _window(row: dict[str, Any]) -> WindowOut:
    end = row.get("end_ms")
    return WindowOut(
        machine=row["machine"],
        zone=row["zone"],
        start=iso(row["start_ms"]),
        end=iso(end),
        start_ms=row["start_ms"],
        end_ms=end,
        duration_s=row.get("duration_s"),
        offered=None if row.get("offered") is None else bool(row["offered"]),
        open=end is None,
    )


class _EmbeddedServer(uvicorn.Server):
    """uvicorn inside our loop: the gateway owns the signals, not uvicorn."""

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        yield


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


async def serve_api(gateway: Gateway) -> None:
    sock = bind(gateway.config.api)
    config = uvicorn.Config(create_app(gateway), log_config=None, access_log=False, lifespan="off")
    server = _EmbeddedServer(config)
    log.info("api.listening", url=f"http://{gateway.config.api}", docs="/docs")
    serving = asyncio.ensure_future(server.serve(sockets=[sock]))
    try:
        await asyncio.shield(serving)
    except asyncio.CancelledError:
        server.should_exit = True  # finish in-flight requests and close the socket
        await serving
        raise
    finally:
        sock.close()
