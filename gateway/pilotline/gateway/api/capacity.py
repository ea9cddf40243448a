"""What is free now and what is expected to be: machines, capacity and forecasts.

An owner sees only its own machines; a tenant only offered capacity, with owner names only
where ``owners.<id>.show_to_tenants`` allows: its ``machines`` count is of the machines
offered now (not the fleet), its forecast only the hours a policy offers, of the machines
that have any.

Bookings (issue 15): a machine a live booking holds now (held, requested, confirmed, active)
is not offered to anyone (``rules.booking.capacity``). Its owner and the operators see it
``reserved``, with the booking (``reservation``, ``tenant``, ``until``) beside its state, in
``/api/machines`` and in ``/api/capacity``'s ``reserved``; a tenant sees none of it, not even
its own booking there (``/api/reservations`` lists those).
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, Query, Request, Response
from pydantic import BaseModel, TypeAdapter

from pilotline.gateway.api.auth import EVERYONE, OWNERS, Principal, Role
from pilotline.gateway.api.etag import ETAG_HEADERS, etagged
from pilotline.gateway.api.ports import CapacityPort
from pilotline.gateway.api.problems import responses
from pilotline.gateway.api.times import Instant
from pilotline.gateway.timefmt import iso
from pilotline.rules import State
from pilotline.rules.booking import Reservation, Status

TAG = "capacity"


class BookingNow(BaseModel):
    """The live booking holding a machine now; owners and operators only."""

    reservation: str
    tenant: str
    status: Status
    start: Instant
    until: Instant


def _booking(res: Reservation) -> BookingNow:
    return BookingNow(
        reservation=res.id, tenant=res.tenant, status=res.status, start=iso(res.start_ms),
        until=iso(res.end_ms),
    )


class ReservedOut(BaseModel):
    machine: str
    zone: str
    owner: str
    capabilities: list[str]
    state: State
    booking: BookingNow


class MachineOut(BaseModel):
    id: str
    zone: str
    owner: str
    capabilities: list[str]
    state: State
    state_code: int
    since: Instant
    pending: State | None  # a state seen but not yet held for its debounce
    last_seen: Instant
    idle_since: Instant
    idle_for_s: float
    available: bool
    reserved: bool  # a live booking holds it now (then it is offered to no one else)
    booking: BookingNow | None


class CapacityOut(BaseModel):
    machine: str
    zone: str
    owner: str | None  # None for tenants unless the owner shows its name (show_to_tenants)
    capabilities: list[str]
    idle_since: Instant
    available_since: Instant  # when it had been idle min_idle_s
    idle_for_s: float
    available: bool  # idle for min_idle_s
    offered: bool  # available, and inside its owner's offering policy: bookable
    offered_until: Instant  # when the policy stops offering it (None: open-ended)
    reserved: bool = False  # held by a live booking: not offered (owners and operators)
    booking: BookingNow | None = None  # that booking (owners and operators)


class CapacityAnswer(BaseModel):
    at: Instant
    available: list[CapacityOut]  # bookable now: offered, longest idle first
    idle_not_yet_available: list[CapacityOut]  # idle, but too briefly or outside the policy
    machines: int  # matching the filters; for a tenant, the machines offered now
    # held by a live booking now, in any state, with it; owners and operators (tenants: [])
    reserved: list[ReservedOut] = []


class ForecastHour(BaseModel):
    start: Instant
    start_ms: int
    expected_free_min: float
    offered_min: float


class ForecastOut(BaseModel):
    machine: str
    zone: str
    owner: str | None  # None for tenants unless the owner shows its name
    capabilities: list[str]
    hours: list[ForecastHour]


_FORECASTS = TypeAdapter(list[ForecastOut])
_ETAGGED: dict[int | str, dict[str, Any]] = {
    200: {"headers": ETAG_HEADERS},
    **responses(304),
}


def add_routes(routes: APIRouter, gateway: CapacityPort) -> None:
    """Adds this group's routes to the app's router."""
    min_idle_ms = {m.id: m.min_idle_ms for m in gateway.plant_spec.machines}
    shown_to_tenants = {o for o, policy in gateway.config.owners.items() if policy.show_to_tenants}

    @routes.get("/api/machines", summary="Machines' current states. Operators; owners: their own.",
                tags=[TAG])
    async def list_machines(who: Annotated[Principal, OWNERS]) -> list[MachineOut]:
        booked = gateway.reserved.holding(gateway.clock_ms())
        return [
            MachineOut(
                id=v.id,
                zone=v.zone,
                owner=v.owner,
                capabilities=list(v.capabilities),
                state=v.state,
                state_code=v.state.code,
                since=iso(v.since_ms),
                pending=v.pending,
                last_seen=iso(v.last_seen_ms),
                idle_since=iso(v.window_start_ms),
                idle_for_s=v.idle_for_s,
                available=v.available,
                reserved=res is not None,
                booking=None if res is None else _booking(res),
            )
            for v in gateway.plant.view()
            if who.sees_owner(v.owner)
            for res in (booked.get(v.id),)
        ]

    @routes.get(
        "/api/capacity",
        summary="What is free now, by zone and capability. Operators; owners: their own "
        "machines; tenants: offered capacity, owner names only where the owner allows. "
        "`If-None-Match` with the last `ETag`: 304 while the answer is the same.",
        tags=[TAG],
        response_model=CapacityAnswer,
        responses=_ETAGGED,
    )
    async def get_capacity(
        request: Request,
        who: Annotated[Principal, EVERYONE],
        zone: Annotated[str | None, Query(max_length=64)] = None,
        capability: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        available: list[CapacityOut] = []
        waiting: list[CapacityOut] = []
        reserved: list[ReservedOut] = []
        count = 0
        tenant = who.role is Role.TENANT
        booked = gateway.reserved.holding(gateway.clock_ms())
        for v in gateway.plant.view():
            if not tenant and not who.sees_owner(v.owner):
                continue
            if zone is not None and v.zone != zone:
                continue
            if capability is not None and capability not in v.capabilities:
                continue
            res = booked.get(v.id)
            offered = v.offered and res is None
            if tenant and not offered:
                continue  # the fleet, and what is idle but not offered, are the owner's business
            count += 1
            if res is not None:
                reserved.append(ReservedOut(
                    machine=v.id, zone=v.zone, owner=v.owner, capabilities=list(v.capabilities),
                    state=v.state, booking=_booking(res),
                ))
            if v.state is not State.IDLE or v.window_start_ms is None:
                continue
            item = CapacityOut(
                machine=v.id,
                zone=v.zone,
                owner=v.owner if not tenant or v.owner in shown_to_tenants else None,
                capabilities=list(v.capabilities),
                idle_since=iso(v.window_start_ms),
                available_since=iso(v.window_start_ms + min_idle_ms[v.id]),
                idle_for_s=v.idle_for_s,
                available=v.available,
                offered=offered,
                offered_until=iso(v.offered_until_ms) if offered else None,
                reserved=res is not None,
                booking=None if res is None else _booking(res),
            )
            (available if offered else waiting).append(item)
        available.sort(key=lambda c: -c.idle_for_s)
        answer = CapacityAnswer(
            at=iso(gateway.plant.now_ms),
            available=available,
            idle_not_yet_available=waiting,
            machines=count,
            reserved=reserved,
        )
        return etagged(request, answer.model_dump_json().encode())

    @routes.get(
        "/api/forecast",
        summary="Expected offered free minutes per hour, next 48 h. Everyone; owners: their own; "
        "tenants: the offered hours of machines that have any. `ETag` as for capacity.",
        tags=[TAG],
        response_model=list[ForecastOut],
        responses=_ETAGGED,
    )
    async def get_forecast(
        request: Request,
        who: Annotated[Principal, EVERYONE],
        zone: Annotated[str | None, Query(max_length=64)] = None,
        capability: Annotated[str | None, Query(max_length=64)] = None,
        machine: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
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
            hours = gateway.forecasts.get(spec.id, [])
            if tenant:  # hours no policy offers are the owner's plans, not a tenant's business
                hours = [h for h in hours if h.offered_min > 0]
                if not hours:
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
                        for h in hours
                    ],
                )
            )
        return etagged(request, _FORECASTS.dump_json(out))
