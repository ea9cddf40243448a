"""``GET /api/usage`` (issue 15): the usage statement of [from, to) as JSON or CSV.

Who sees what: a tenant its own bookings only (the owner's name only where the owner shows
it, as in offers); an owner the bookings on its machines; operators all; scrapers nothing.
The figures come from service/usage.py, the same function ``pilotline booking statement``
prints, metered from the machines' confirmed states as the booking lifecycle reads them.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Annotated, Literal

from fastapi import APIRouter, HTTPException, Query
from fastapi.responses import Response
from pydantic import BaseModel, Field

from pilotline.gateway.api.auth import EVERYONE, Principal, Role
from pilotline.gateway.api.ports import UsagePort
from pilotline.gateway.api.problems import invalid
from pilotline.gateway.api.times import ApiTime, Instant
from pilotline.gateway.service.usage import DEFAULT_SPAN_MS, MAX_SPAN_MS, csv_text, statement
from pilotline.gateway.timefmt import iso
from pilotline.rules.booking import Status

TAG = "booking"


class UsageLineOut(BaseModel):
    id: str
    machine: str
    tenant: str
    owner: str | None = Field(
        description="null for tenants unless the owner shows its name (show_to_tenants)"
    )
    status: Status
    start: Instant
    end: Instant
    booked_min: float = Field(description="the booking's length")
    used_min: float = Field(description="running inside the booking")
    idle_min: float
    down_min: float
    maintenance_min: float
    offline_min: float
    unused_min: float = Field(description="inside the booking, not running")
    overrun_min: float = Field(description="still running past the end")
    billed_min: float = Field(description="the time billed, after rounding and the minimum")
    charge: float
    currency: str
    late_cancel: bool
    waived: bool = Field(description="a late cancellation's fee, waived: the slot was reused")
    provisional: bool = Field(description="may still change: not ended, or still overrunning")


class CurrencyAmount(BaseModel):
    currency: str
    amount: float


class UsageTotals(BaseModel):
    bookings: int
    booked_min: float
    used_min: float
    idle_min: float
    down_min: float
    maintenance_min: float
    offline_min: float
    unused_min: float
    overrun_min: float
    billed_min: float
    charges: list[CurrencyAmount] = Field(description="per currency")
    provisional: bool


class UsageStatement(BaseModel):
    from_: Instant = Field(alias="from")
    to: Instant
    generated: Instant
    lines: list[UsageLineOut]
    totals: UsageTotals


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).strftime("%Y%m%d")


def add_routes(routes: APIRouter, gateway: UsagePort) -> None:
    """Adds ``/api/usage`` to the app's router."""
    owners = {m.id: m.owner for m in gateway.plant_spec.machines}
    shown_to_tenants = {o for o, policy in gateway.config.owners.items() if policy.show_to_tenants}

    @routes.get(
        "/api/usage",
        summary="The usage statement of the bookings starting in [from, to) (default the "
        "last 30 days, at most 93): per booking its booked, used, idle, down, offline, "
        "unused and overrun minutes and its charge under the owner's rule; totals. "
        "`format=csv`: the lines as CSV with a header row. Tenants: their own bookings; "
        "owners: those on their machines; operators: all.",
        tags=[TAG],
        response_model=UsageStatement,
        response_model_by_alias=True,
        responses={200: {"content": {"text/csv": {"schema": {"type": "string"}}}}},
    )
    async def get_usage(
        who: Annotated[Principal, EVERYONE],
        from_: Annotated[ApiTime, Query(alias="from")] = None,
        to: ApiTime = None,
        format: Literal["json", "csv"] = "json",
    ) -> UsageStatement | Response:
        now_ms = gateway.clock_ms()
        to_ms = now_ms if to is None else to
        from_ms = to_ms - DEFAULT_SPAN_MS if from_ is None else from_
        if to_ms <= from_ms:
            raise invalid(("query", "to"), "`to` must come after `from`")
        if to_ms - from_ms > MAX_SPAN_MS:
            raise invalid(("query", "to"), "a statement spans at most 93 days")
        tenant = who.role is Role.TENANT
        if who.role is not Role.OPERATOR and who.subject is None:
            raise HTTPException(403, "this token names no company or owner")
        found = statement(
            gateway.store.reservations(), gateway.config, owners, gateway.bookings.changes,
            from_ms=from_ms, to_ms=to_ms, now_ms=now_ms,
            tenant=who.subject if tenant else None,
            owner=who.subject if who.role is Role.OWNER else None,
        )
        rows = [
            line.row(owner=not tenant or line.owner in shown_to_tenants)
            for line in found.lines
        ]
        if format == "csv":
            name = f"pilotline-usage-{_day(from_ms)}-{_day(to_ms)}.csv"
            return Response(
                csv_text(rows), media_type="text/csv; charset=utf-8",
                headers={"Content-Disposition": f'attachment; filename="{name}"'},
            )
        return UsageStatement.model_validate({
            "from": iso(from_ms), "to": iso(to_ms), "generated": iso(now_ms),
            "lines": rows, "totals": found.totals(),
        })
