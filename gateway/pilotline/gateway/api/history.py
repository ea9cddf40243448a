"""What happened: idle windows and utilization, from the embedded store's history.

Operators see every machine, owners their own; at most ``MAX_HISTORY_DAYS`` back (older
history is InfluxDB's).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, Field

from pilotline.gateway.api.auth import OWNERS, Principal, Role
from pilotline.gateway.api.pages import LINK_HEADER, Cursor, after_key, set_next
from pilotline.gateway.api.ports import HistoryPort
from pilotline.gateway.api.problems import invalid
from pilotline.gateway.api.times import ApiTime, Instant
from pilotline.gateway.timefmt import iso
from pilotline.rules.utilization import STATES as UTILIZATION_STATES
from pilotline.rules.utilization import Usage

DAY_MS = 86_400_000
MAX_HISTORY_DAYS = 366
"""How far back ``/api/windows?since=`` may reach (older history: query InfluxDB)."""
TAG = "history"


class WindowOut(BaseModel):
    machine: str
    zone: str
    start: Instant
    end: Instant
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
    from_: Instant = Field(serialization_alias="from")
    to: Instant
    until: Instant  # the end of what was measured: `to`, or now if `to` is later
    machines: list[MachineUsageOut]
    zones: list[ZoneUsageOut]


def add_routes(routes: APIRouter, gateway: HistoryPort) -> None:
    """Adds this group's routes to the app's router."""
    owned: dict[str, list[str]] = {}
    for m in gateway.plant_spec.machines:
        owned.setdefault(m.owner, []).append(m.id)

    @routes.get(
        "/api/windows",
        summary="Idle windows since a time, newest first, `limit` a page: a `Link` header "
        "gives the next. Operators; owners: their own.",
        tags=[TAG],
        responses={200: {"headers": LINK_HEADER}},
    )
    async def list_windows(
        *,
        request: Request,
        response: Response,
        who: Annotated[Principal, OWNERS],
        since: Annotated[
            ApiTime,
            Query(description=f"epoch ms or ISO 8601; at most {MAX_HISTORY_DAYS} days back "
                  "(default: 24 h)"),
        ] = None,
        machine: Annotated[str | None, Query(max_length=64)] = None,
        limit: Annotated[int, Query(ge=1, le=10_000)] = 1000,
        cursor: Cursor = None,
    ) -> list[WindowOut]:
        now = gateway.clock_ms()
        since_ms = since if since is not None else now - DAY_MS
        if since_ms < now - MAX_HISTORY_DAYS * DAY_MS:
            raise invalid(
                ("query", "since"),
                f"since reaches more than {MAX_HISTORY_DAYS} days back: query InfluxDB",
            )
        after = after_key("windows", cursor, (int, str))
        among = None if who.role is Role.OPERATOR else owned.get(who.subject or "", [])
        rows = gateway.store.windows(
            since_ms, machine=machine, limit=limit + 1, among=among,
            after=None if after is None else (int(after[0]), str(after[1])),
        )
        kept = set_next(request, response, "windows", rows, limit=limit,
                        key=lambda r: (r["start_ms"], r["machine"]), since=since_ms)
        return [_window(row) for row in kept]

    @routes.get(
        "/api/utilization",
        summary="Share of time running, idle, down, in maintenance and offline per machine "
        "and zone over [from, to). Operators; owners: their own machines.",
        response_model_by_alias=True,
        tags=[TAG],
    )
    async def get_utilization(
        who: Annotated[Principal, OWNERS],
        from_: Annotated[
            ApiTime,
            Query(alias="from", description="epoch ms or ISO 8601 (default: 24 h before `to`)"),
        ] = None,
        to: Annotated[
            ApiTime,
            Query(description=f"epoch ms or ISO 8601 (default: now); at most "
                  f"{MAX_HISTORY_DAYS} days after `from`"),
        ] = None,
    ) -> UtilizationAnswer:
        to_ms = to if to is not None else gateway.clock_ms()
        from_ms = from_ if from_ is not None else to_ms - DAY_MS
        if to_ms <= from_ms:
            raise invalid(("query", "to"), "`to` must be after `from`")
        if to_ms - from_ms > MAX_HISTORY_DAYS * DAY_MS:
            raise invalid(("query", "to"), f"the period is longer than {MAX_HISTORY_DAYS} days")
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



def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "shares": {state.value: round(usage.share(state), 6) for state in UTILIZATION_STATES},
        "seconds": {state.value: usage.seconds(state) for state in UTILIZATION_STATES},
        "period_s": usage.period_ms / 1000.0,
    }


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
