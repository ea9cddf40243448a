"""The HTTP API: health, Prometheus metrics, machines, capacity and idle windows.

Served by uvicorn inside the gateway's own event loop; every handler is ``async`` so it runs in
that loop (never in a thread pool) and reads the core and the SQLite store without locks.

Access (``auth.py``): every route but ``/health`` declares who may call it with one of
``OPERATORS``, ``SCRAPERS``, ``OWNERS``, ``EVERYONE`` (or ``allow(Role...)``), either in
``dependencies=[...]`` or as a ``Principal`` parameter when the answer depends on who asks:
an owner sees only its own machines (``who.sees_owner(owner)``), a tenant only offered
capacity, with owner names only where ``owners.<id>.show_to_tenants`` allows. A new route
without a declaration fails ``tests/gateway/test_api_access.py``. The OpenAPI document is at
``/openapi.json`` (a token is needed); Swagger UI is not served (it would fetch the
document without a token). The API listens on loopback unless configured otherwise.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import socket
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Annotated, Any, Literal

import structlog
import uvicorn
from fastapi import FastAPI, HTTPException, Query
from fastapi.responses import JSONResponse, Response
from prometheus_client import CONTENT_TYPE_LATEST, generate_latest
from pydantic import BaseModel, Field

from pilotline.gateway import __version__
from pilotline.gateway.api.auth import (
    EVERYONE,
    OPERATORS,
    OWNERS,
    SCRAPERS,
    Access,
    Principal,
    RequestGuard,
    Role,
)
from pilotline.gateway.api.metrics import registry
from pilotline.gateway.config import duration_ms
from pilotline.rules import State
from pilotline.rules.alerts import AlertView
from pilotline.rules.dispatch import Silence
from pilotline.rules.utilization import STATES as UTILIZATION_STATES
from pilotline.rules.utilization import Usage

if TYPE_CHECKING:
    from pilotline.gateway.service import Gateway

log = structlog.get_logger("pilotline.gateway.api")

DAY_MS = 86_400_000
MAX_SILENCE_MS = 90 * DAY_MS
"""The longest silence the API sets: a forgotten silence must not mute a site for ever."""
SilenceLabel = Literal["rule", "zone", "severity", "machine", "owner"]
MAX_HISTORY_DAYS = 366
"""How far back ``/api/windows?since=`` may reach (older history: query InfluxDB)."""


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


class AlertOut(BaseModel):
    rule: str
    machine: str
    zone: str
    owner: str
    severity: str
    status: str  # pending or firing
    since: str | None  # the condition has held since
    firing_since: str | None
    value: float | None
    message: str
    acked_by: str | None = None  # who acknowledged it (firing alerts; cleared on resolve)
    acked_at: str | None = None
    silenced_by: list[str] = Field(default_factory=list)  # ids of the silences muting it


class AckIn(BaseModel):
    """Acknowledge a firing alert: its repeats stop until it resolves."""

    rule: str = Field(min_length=1, max_length=200)
    machine: str = Field(min_length=1, max_length=400)  # a machine id, or a collector's name
    comment: str = Field(default="", max_length=1000)


class AckOut(BaseModel):
    rule: str
    machine: str
    acked_by: str
    acked_at: str | None


class SilenceIn(BaseModel):
    """Mute the notifications of every alert whose labels equal all ``matchers`` (labels:
    rule, zone, severity, machine, owner) from ``starts_at`` (default now) until ``ends_at``,
    or for ``duration`` (``30m``, ``2h``, ``1d``)."""

    matchers: dict[SilenceLabel, Annotated[str, Field(min_length=1, max_length=400)]] = Field(
        min_length=1
    )
    starts_at: datetime | None = None
    ends_at: datetime | None = None
    duration: str | None = None
    comment: str = Field(default="", max_length=1000)


class SilenceOut(BaseModel):
    id: str
    matchers: dict[str, str]
    starts_at: str | None
    ends_at: str | None
    created_by: str
    created_at: str | None
    comment: str
    active: bool


class CapacityOut(BaseModel):
    machine: str
    zone: str
    owner: str | None  # None for tenants unless the owner shows its name (show_to_tenants)
    capabilities: list[str]
    idle_since: str | None
    available_since: str | None  # when it had been idle min_idle_s
    idle_for_s: float
    available: bool  # idle for min_idle_s
    offered: bool  # available, and inside its owner's offering policy: bookable
    offered_until: str | None  # when the policy stops offering it (None: open-ended)


class CapacityAnswer(BaseModel):
    at: str | None
    available: list[CapacityOut]  # bookable now: offered, longest idle first
    idle_not_yet_available: list[CapacityOut]  # idle, but too briefly or outside the policy
    machines: int


class ForecastHour(BaseModel):
    start: str | None
    start_ms: int
    expected_free_min: float
    offered_min: float


class ForecastOut(BaseModel):
    machine: str
    zone: str
    owner: str | None  # None for tenants unless the owner shows its name
    capabilities: list[str]
    hours: list[ForecastHour]


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


class UsageOut(BaseModel):
    """Shares (0..1) and seconds per state; for a zone, machine-seconds of its machines."""

    shares: dict[str, float]
    seconds: dict[str, float]
    period_s: float


class MachineUsageOut(UsageOut):
    machine: str
    zone: str


class ZoneUsageOut(UsageOut):
    zone: str
    machines: int


class UtilizationAnswer(BaseModel):
    from_: str | None = Field(serialization_alias="from")
    to: str | None
    until: str | None  # the end of what was measured: `to`, or now if `to` is later
    machines: list[MachineUsageOut]
    zones: list[ZoneUsageOut]


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "shares": {state.value: round(usage.share(state), 6) for state in UTILIZATION_STATES},
        "seconds": {state.value: usage.seconds(state) for state in UTILIZATION_STATES},
        "period_s": usage.period_ms / 1000.0,
    }


def create_app(gateway: Gateway) -> FastAPI:
    app = FastAPI(
        title="pilotline",
        version=__version__,
        description="Idle time of industrial equipment as bookable capacity. Every route but "
        "/health needs `Authorization: Bearer TOKEN` (`pilotline token create`).",
        docs_url=None,
        redoc_url=None,
        openapi_url=None,
    )
    app.state.access = Access(gateway.store.tokens, gateway.metrics.auth_failures)
    app.add_middleware(RequestGuard)
    metrics_registry = registry(gateway.metrics, gateway.gauges())
    min_idle_ms = {m.id: m.min_idle_ms for m in gateway.plant_spec.machines}
    shown_to_tenants = {o for o, policy in gateway.config.owners.items() if policy.show_to_tenants}
    owned: dict[str, list[str]] = {}
    for m in gateway.plant_spec.machines:
        owned.setdefault(m.owner, []).append(m.id)

    @app.get("/health", summary="Each collector and sink, with why when unhealthy. Anyone.")
    async def health() -> JSONResponse:
        body = gateway.health()
        return JSONResponse(body, status_code=200 if body["healthy"] else 503)

    @app.get("/openapi.json", include_in_schema=False, dependencies=[EVERYONE])
    async def openapi() -> JSONResponse:
        return JSONResponse(app.openapi())

    @app.get(
        "/metrics",
        summary="Prometheus exposition. Operators and scrapers.",
        dependencies=[SCRAPERS],
    )
    async def metrics() -> Response:
        return Response(generate_latest(metrics_registry), media_type=CONTENT_TYPE_LATEST)

    @app.get("/api/machines", summary="Machines' current states. Operators; owners: their own.")
    async def machines(who: Annotated[Principal, OWNERS]) -> list[MachineOut]:
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
            if who.sees_owner(v.owner)
        ]

    @app.get(
        "/api/capacity",
        summary="What is free now, by zone and capability. Operators; owners: their own "
        "machines; tenants: offered capacity, owner names only where the owner allows.",
    )
    async def capacity(
        who: Annotated[Principal, EVERYONE],
        zone: Annotated[str | None, Query(max_length=64)] = None,
        capability: Annotated[str | None, Query(max_length=64)] = None,
    ) -> CapacityAnswer:
        available: list[CapacityOut] = []
        waiting: list[CapacityOut] = []
        count = 0
        tenant = who.role is Role.TENANT
        for v in gateway.plant.view():
            if not tenant and not who.sees_owner(v.owner):
                continue
            if zone is not None and v.zone != zone:
                continue
            if capability is not None and capability not in v.capabilities:
                continue
            count += 1
            if v.state is not State.IDLE or v.window_start_ms is None:
                continue
            if tenant and not v.offered:
                continue  # idle but not offered is the owner's business, not a tenant's
            item = CapacityOut(
                machine=v.id,
                zone=v.zone,
                owner=v.owner if not tenant or v.owner in shown_to_tenants else None,
                capabilities=list(v.capabilities),
                idle_since=iso(v.window_start_ms),
                available_since=iso(v.window_start_ms + min_idle_ms[v.id]),
                idle_for_s=v.idle_for_s,
                available=v.available,
                offered=v.offered,
                offered_until=iso(v.offered_until_ms),
            )
            (available if v.offered else waiting).append(item)
        available.sort(key=lambda c: -c.idle_for_s)
        return CapacityAnswer(
            at=iso(gateway.plant.now_ms),
            available=available,
            idle_not_yet_available=waiting,
            machines=count,
        )

    @app.get(
        "/api/forecast",
        summary="Expected offered free minutes per hour, next 48 h. Everyone; owners: their own.",
    )
    async def forecast(
        who: Annotated[Principal, EVERYONE],
        zone: Annotated[str | None, Query(max_length=64)] = None,
        capability: Annotated[str | None, Query(max_length=64)] = None,
        machine: Annotated[str | None, Query(max_length=64)] = None,
    ) -> list[ForecastOut]:
        tenant = who.role is Role.TENANT
        out = []
        for spec in gateway.plant_spec.machines:
            if not tenant and not who.sees_owner(spec.owner):
                continue
            if zone is not None and spec.zone != zone:
                continue
            if capability is not None and capability not in spec.capabilities:
                continue
            if machine is not None and spec.id != machine:
                continue
            out.append(
                ForecastOut(
                    machine=spec.id,
                    zone=spec.zone,
                    owner=spec.owner if not tenant or spec.owner in shown_to_tenants else None,
                    capabilities=list(spec.capabilities),
                    hours=[
                        ForecastHour(
                            start=iso(h.start_ms),
                            start_ms=h.start_ms,
                            expected_free_min=h.expected_free_min,
                            offered_min=h.offered_min,
                        )
                        for h in gateway.forecasts.get(spec.id, [])
                    ],
                )
            )
        return out

    @app.get(
        "/api/windows",
        summary="Idle windows since a time, newest first. Operators; owners: their own.",
    )
    async def windows(
        who: Annotated[Principal, OWNERS],
        since: Annotated[
            str | None,
            Query(max_length=40, description=f"epoch ms or ISO 8601; at most {MAX_HISTORY_DAYS}"
                  " days back (default: 24 h)"),
        ] = None,
        machine: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
    ) -> list[WindowOut]:
        now = gateway.clock_ms()
        since_ms = parse_time(since) if since else now - DAY_MS
        if since_ms < now - MAX_HISTORY_DAYS * DAY_MS:
            raise HTTPException(
                422, f"since reaches more than {MAX_HISTORY_DAYS} days back: query InfluxDB"
            )
        among = None if who.role is Role.OPERATOR else owned.get(who.subject or "", [])
        rows = gateway.store.windows(since_ms, machine=machine, limit=limit, among=among)
        return [_window(row) for row in rows]

    @app.get(
        "/api/utilization",
        summary="Share of time running, idle, down, in maintenance and offline per machine "
        "and zone over [from, to). Operators; owners: their own machines.",
        response_model_by_alias=True,
    )
    async def utilization(
        who: Annotated[Principal, OWNERS],
        from_: Annotated[
            str | None,
            Query(alias="from", max_length=40, description="epoch ms or ISO 8601 (default: "
                  "24 h before `to`)"),
        ] = None,
        to: Annotated[
            str | None,
            Query(max_length=40, description=f"epoch ms or ISO 8601 (default: now); at most "
                  f"{MAX_HISTORY_DAYS} days after `from`"),
        ] = None,
    ) -> UtilizationAnswer:
        to_ms = parse_time(to) if to else gateway.clock_ms()
        from_ms = parse_time(from_) if from_ else to_ms - DAY_MS
        if to_ms <= from_ms:
            raise HTTPException(422, "`to` must be after `from`")
        if to_ms - from_ms > MAX_HISTORY_DAYS * DAY_MS:
            raise HTTPException(422, f"the period is longer than {MAX_HISTORY_DAYS} days")
        among = None if who.role is Role.OPERATOR else owned.get(who.subject or "", [])
        report = gateway.utilization(from_ms, to_ms, among=among)
        return UtilizationAnswer(
            from_=iso(report.from_ms),
            to=iso(report.to_ms),
            until=iso(report.until_ms),
            machines=[
                MachineUsageOut(machine=m.machine, zone=m.zone, **_usage(m.usage))
                for m in report.machines
            ],
            zones=[
                ZoneUsageOut(zone=z.zone, machines=z.machines, **_usage(z.usage))
                for z in report.zones
            ],
        )

    @app.get(
        "/api/alerts",
        summary="Pending and firing alerts. Operators; owners: their own machines.",
    )
    async def alerts(who: Annotated[Principal, OWNERS]) -> list[AlertOut]:
        return [
            AlertOut(
                rule=a.rule,
                machine=a.machine,
                zone=a.zone,
                owner=a.owner,
                severity=a.severity,
                status=a.status.value,
                since=iso(a.since_ms),
                firing_since=iso(a.firing_since_ms),
                value=a.value if math.isfinite(a.value) else None,
                message=a.message,
                **_marks(gateway, a),
            )
            for a in gateway.alerts.view()
            if who.sees_owner(a.owner)
        ]

    @app.post(
        "/api/alerts/ack",
        summary="Acknowledge a firing alert (who and when are kept); it stops repeating. "
        "Operators.",
    )
    async def acknowledge(body: AckIn, who: Annotated[Principal, OPERATORS]) -> AckOut:
        at_ms = gateway.acknowledge(body.rule, body.machine, who.name, body.comment)
        if at_ms is None:
            raise HTTPException(404, f"no firing alert {body.rule!r} on {body.machine!r}")
        return AckOut(rule=body.rule, machine=body.machine, acked_by=who.name, acked_at=iso(at_ms))

    @app.get("/api/silences", summary="Active, future and recent silences. Operators.",
             dependencies=[OPERATORS])
    async def silences() -> list[SilenceOut]:
        now_ms = gateway.clock_ms()
        return [_silence(s.silence, s.created_ms, now_ms) for s in gateway.silences()]

    @app.post("/api/silences", status_code=201,
              summary="Mute matching alerts' notifications until an end time. Operators.")
    async def add_silence(body: SilenceIn, who: Annotated[Principal, OPERATORS]) -> SilenceOut:
        now_ms = gateway.clock_ms()
        starts_ms = now_ms if body.starts_at is None else _aware_ms(body.starts_at, "starts_at")
        if (body.ends_at is None) == (body.duration is None):
            raise HTTPException(422, "give exactly one of ends_at and duration")
        if body.ends_at is not None:
            ends_ms = _aware_ms(body.ends_at, "ends_at")
        else:
            assert body.duration is not None
            try:
                ends_ms = starts_ms + duration_ms(body.duration)
            except ValueError as e:
                raise HTTPException(422, f"duration: {e}") from None
        if ends_ms <= max(starts_ms, now_ms):
            raise HTTPException(422, "the silence would end before it starts or in the past")
        if ends_ms - starts_ms > MAX_SILENCE_MS:
            raise HTTPException(422, "a silence lasts at most 90 days")
        silence = gateway.add_silence(
            {str(k): v for k, v in body.matchers.items()}, starts_ms, ends_ms, who.name,
            body.comment,
        )
        return _silence(silence, now_ms, now_ms)

    @app.delete("/api/silences/{silence_id}", summary="End a silence now. Operators.",
                dependencies=[OPERATORS])
    async def end_silence(silence_id: str) -> SilenceOut:
        ended = gateway.end_silence(silence_id)
        if ended is None:
            raise HTTPException(404, f"no silence {silence_id!r}")
        return _silence(ended.silence, ended.created_ms, gateway.clock_ms())

    @app.get(
        "/api/quarantine",
        summary="The latest rejected inputs, with reasons. Operators.",
        dependencies=[OPERATORS],
    )
    async def quarantine(limit: Annotated[int, Query(ge=1, le=1000)] = 100) -> list[dict[str, Any]]:
        rows = gateway.store.quarantine(limit)
        for row in rows:
            head = row.get("head")
            if isinstance(head, bytes):
                row["head"] = head.decode("utf-8", "backslashreplace")
        return rows

    return app


def _marks(gateway: Gateway, view: AlertView) -> dict[str, Any]:
    mark = gateway.alert_marks(view)
    return {
        "acked_by": mark.acked_by,
        "acked_at": iso(mark.acked_ms),
        "silenced_by": list(mark.silenced_by),
    }


def _silence(silence: Silence, created_ms: int, now_ms: int) -> SilenceOut:
    return SilenceOut(
        id=silence.id,
        matchers=dict(silence.matchers),
        starts_at=iso(silence.starts_ms),
        ends_at=iso(silence.ends_ms),
        created_by=silence.created_by,
        created_at=iso(created_ms),
        comment=silence.comment,
        active=silence.starts_ms <= now_ms < silence.ends_ms,
    )


def _aware_ms(moment: datetime, name: str) -> int:
    if moment.tzinfo is None:
        raise HTTPException(422, f"{name} has no time zone; add Z or an offset")
    return int(moment.timestamp() * 1000)


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
    config = uvicorn.Config(
        create_app(gateway),
        log_config=None,
        access_log=False,  # api.access (auth.py) audits authenticated requests instead
        lifespan="off",
        limit_concurrency=256,  # beyond this many open requests: 503, not unbounded memory
        server_header=False,
    )
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
