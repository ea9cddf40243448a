"""Booking (issue 15): offers, reservations and their lifecycle, with DESIGN.md's route names.

Who sees what: a tenant books and sees its own reservations, and offers of the machines some
policy offers (owner names only where ``show_to_tenants`` allows; another tenant's booking
is only busy time: a 409 lists the intervals, not their ids); an owner sees offers of and
reservations on its own machines, and approves, rejects or cancels them; operators all, and
may book for a tenant (``tenant`` in the body). A reservation the caller may not see is a
404, as one that does not exist.

No double booking: ``Reservations.request`` checks and inserts in one SQLite transaction
(the store's docstring); the handlers here only translate. The 100-request race through the
real server: tests/integration/test_booking_race.py.
"""

from __future__ import annotations

from typing import Annotated, Any, Final

import orjson
from fastapi import APIRouter, Header, HTTPException, Query, Request, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

from pilotline.gateway.api.auth import EVERYONE, OWNERS, Principal, Role, allow
from pilotline.gateway.api.forecast_advice import SlotForecast, forecast_json
from pilotline.gateway.api.pages import LINK_HEADER, Cursor, Key, after_key, page, set_next
from pilotline.gateway.api.ports import BookingPort
from pilotline.gateway.api.problems import PROBLEM_JSON, invalid, problem_body, responses
from pilotline.gateway.api.refusals import not_offered, offer_alternatives, refused
from pilotline.gateway.api.shards import check_owner
from pilotline.gateway.api.times import ApiTime, Instant
from pilotline.gateway.store.reservations import MAX_KEY_CHARS, ReservationError
from pilotline.gateway.timefmt import iso
from pilotline.rules import State
from pilotline.rules.booking import (
    LIVE,
    Accepted,
    BookingRules,
    Conflict,
    Interval,
    Refused,
    Reservation,
    Status,
    allowed,
    free_slots,
)
from pilotline.rules.booking import (
    Request as BookingRequest,
)
from pilotline.rules.booking.intervals import subtract
from pilotline.rules.policy import OfferingPolicy
from pilotline.rules.spec import MachineSpec

TAG = "booking"
DAY_MS: Final = 86_400_000
DEFAULT_SPAN_MS: Final = 7 * DAY_MS
MAX_SPAN_MS: Final = 31 * DAY_MS
"""The widest ``/api/offers`` window: each machine's slots are computed per request."""
ALTERNATIVES_AHEAD_MS: Final = 7 * DAY_MS
"""How far past a conflicting request the alternatives are looked for."""
MAX_PAGE: Final = 1000

TENANTS: Final = allow(Role.TENANT)


class Slot(BaseModel):
    start: Instant
    end: Instant
    start_ms: int
    end_ms: int
    forecast: SlotForecast | None = Field(
        default=None,
        description="advice, never a promise: how often the machine was idle and offerable "
        "in these hours of past weeks (api/forecast_advice.py); null beyond the forecast",
    )


class OfferOut(BaseModel):
    machine: str
    zone: str
    owner: str | None = Field(
        description="null for tenants unless the owner shows its name (show_to_tenants)"
    )
    capabilities: list[str]
    slots: list[Slot] = Field(description="free bookable time in [from, to)")
    available: bool | None = Field(description="advice: idle long enough to be used now")
    live_state: State | None = Field(
        description="advice: the machine's state now; null for tenants (DESIGN.md)"
    )


class ReservationIn(BaseModel):
    machine: str = Field(min_length=1, max_length=200)
    start: ApiTime
    end: ApiTime
    purpose: str = Field(default="", max_length=1000)
    tenant: str | None = Field(
        default=None, min_length=1, max_length=200,
        description="operators: the tenant booked for; a tenant books for itself",
    )


class ReservationOut(BaseModel):
    id: str
    machine: str
    tenant: str
    status: Status
    start: Instant
    end: Instant
    start_ms: int
    end_ms: int
    created: Instant
    hold_until: Instant = Field(description="a `held` reservation expires then")
    predecessor: str | None
    purpose: str
    successor: str | None = Field(
        default=None, description="the reservation a move or an extension of this one created"
    )


class NoteIn(BaseModel):
    note: str = Field(default="", max_length=1000)


class ExtendIn(BaseModel):
    end: ApiTime = Field(description="the new end; the start stays")


class MoveIn(BaseModel):
    start: ApiTime
    end: ApiTime


IdempotencyKey = Annotated[str | None, Header(alias="Idempotency-Key", max_length=MAX_KEY_CHARS)]


def _out(res: Reservation, successor: str | None = None) -> ReservationOut:
    return ReservationOut(
        id=res.id, machine=res.machine, tenant=res.tenant, status=res.status,
        start=iso(res.start_ms), end=iso(res.end_ms), start_ms=res.start_ms,
        end_ms=res.end_ms, created=iso(res.created_ms), hold_until=iso(res.hold_until_ms),
        predecessor=res.predecessor, purpose=res.purpose, successor=successor,
    )


def _slot(span: Interval) -> dict[str, Any]:
    return {"start": iso(span[0]), "end": iso(span[1]), "start_ms": span[0], "end_ms": span[1]}


def _key(res: Reservation) -> Key:
    return (res.start_ms, res.id)


def add_routes(routes: APIRouter, gateway: BookingPort) -> None:
    """Adds this group's routes to the app's router."""
    specs = {m.id: m for m in gateway.plant_spec.machines}
    shown_to_tenants = {o for o, policy in gateway.config.owners.items() if policy.show_to_tenants}

    def offered(spec: MachineSpec, from_ms: int, to_ms: int) -> list[Interval]:
        """The policy's allowed time minus planned maintenance (no reservations)."""
        return subtract(allowed(spec.policy, from_ms, to_ms), gateway.config.maintenance(spec.id))

    rules_of: dict[str, tuple[BookingRules, tuple[Interval, ...]]] = {}

    def machine_rules(machine: str) -> tuple[BookingRules, tuple[Interval, ...]]:
        """The machine's booking rules and planned maintenance, looked up once (the site's
        configuration does not change while the gateway runs; each look-up scans it)."""
        if machine not in rules_of:
            rules_of[machine] = (gateway.config.booking_rules(machine),
                                 gateway.config.maintenance(machine))
        return rules_of[machine]

    def bookable_by(who: Principal, spec: MachineSpec) -> bool:
        if who.role is Role.TENANT:
            return not spec.policy.never
        return who.sees_owner(spec.owner)

    def sees(who: Principal, res: Reservation) -> bool:
        if who.role is Role.TENANT:
            return res.tenant == who.subject
        spec = specs.get(res.machine)
        return spec is not None and who.sees_owner(spec.owner)

    def visible(who: Principal, rid: str) -> Reservation:
        res = gateway.store.reservations().get(rid)
        if res is None or not sees(who, res):
            raise HTTPException(404, f"no reservation {rid!r}")
        return res

    def step(call: Any, rid: str) -> ReservationOut:
        try:
            return _out(call())
        except ReservationError as e:
            raise HTTPException(409, str(e)) from None

    @routes.get(
        "/api/offers",
        summary="Free bookable time per machine in [from, to) (default the next 7 days, at "
        "most 31): its offering policy minus planned maintenance and live reservations with "
        "their buffers; `available` (and, for owners and operators, the live state) and "
        "each slot's `forecast` as advice. Tenants: the offered machines, owner names only "
        "where the owner allows; owners: their own; operators: all. Sharded: 421 for a "
        "`machine` another shard keeps.",
        tags=[TAG],
        responses=responses(421),
        response_model=list[OfferOut],
    )
    async def list_offers(
        *,
        request: Request,
        who: Annotated[Principal, EVERYONE],
        capability: Annotated[str | None, Query(max_length=64)] = None,
        zone: Annotated[str | None, Query(max_length=64)] = None,
        machine: Annotated[str | None, Query(max_length=200)] = None,
        from_: Annotated[ApiTime, Query(alias="from")] = None,
        to: ApiTime = None,
    ) -> Response:
        if machine is not None and machine not in specs:
            check_owner(gateway.config.shard_layout, who, machine, request)
        now_ms = gateway.clock_ms()
        from_ms = now_ms if from_ is None else from_
        to_ms = from_ms + DEFAULT_SPAN_MS if to is None else to
        if to_ms <= from_ms:
            raise invalid(("query", "to"), "`to` must come after `from`")
        if to_ms - from_ms > MAX_SPAN_MS:
            raise invalid(("query", "to"), "offers span at most 31 days")
        tenant = who.role is Role.TENANT
        live = {v.id: v for v in gateway.plant.view()}
        shown = [
            spec for spec in sorted(specs.values(), key=lambda m: (m.zone, m.id))
            if bookable_by(who, spec)
            and (zone is None or spec.zone == zone)
            and (capability is None or capability in spec.capabilities)
            and (machine is None or spec.id == machine)
        ]
        # Per request, not per machine (benchmarks/README.md, "Booking"): one query for the
        # live reservations of every machine shown (a wider window than a machine's own
        # buffer only adds holes outside [from, to)), each policy's allowed time once, each
        # instant formatted once; the answer as plain dicts in OfferOut's shape straight to
        # JSON (a pydantic object per slot cost more than the offers, and its garbage
        # collections the p99; tests/gateway/test_booking_offers.py checks the shape).
        widest = max((machine_rules(s.id)[0].buffer_ms for s in shown), default=0)
        near: dict[str, list[Reservation]] = {}
        for r in gateway.store.reservations().list(
            from_ms=from_ms - widest, to_ms=to_ms + widest, statuses=LIVE
        ):
            near.setdefault(r.machine, []).append(r)
        by_policy: dict[OfferingPolicy, list[Interval]] = {}
        stamps: dict[int, str] = {}

        def stamp(ms: int) -> str:
            text = stamps.get(ms)
            if text is None:
                text = stamps[ms] = iso(ms)
            return text

        out: list[bytes] = []  # each offer as JSON at once: its objects never grow old
        for spec in shown:
            rules, maintenance = machine_rules(spec.id)
            spans = by_policy.get(spec.policy)
            if spans is None:
                spans = by_policy[spec.policy] = allowed(spec.policy, from_ms, to_ms)
            # a hold that is due holds nothing, whether or not it has been expired yet
            held = [r for r in near.get(spec.id, ()) if r.status is not Status.HELD
                    or r.hold_until_ms is None or r.hold_until_ms > now_ms]
            view = live.get(spec.id)
            out.append(orjson.dumps({
                "machine": spec.id,
                "zone": spec.zone,
                "owner": spec.owner if not tenant or spec.owner in shown_to_tenants else None,
                "capabilities": list(spec.capabilities),
                "slots": [
                    {"start": stamp(a), "end": stamp(b), "start_ms": a, "end_ms": b,
                     "forecast": forecast_json(gateway.forecasts.outlook(spec.id, a, b))}
                    for a, b in free_slots(spans, held, rules.buffer_ms, maintenance)
                ],
                "available": None if view is None else view.available,
                "live_state": None if tenant or view is None else view.state.value,
            }))
        return Response(b"[" + b",".join(out) + b"]", media_type="application/json")

    @routes.post(
        "/api/reservations",
        status_code=201,
        summary="Hold a slot (`held` until `hold_until`; confirm it with "
        "POST /api/reservations/{id}/confirm). An `Idempotency-Key` makes a retry harmless: "
        "the same key and request answer the same reservation (200). 409: the slot conflicts "
        "(`conflicts`, `alternatives`); 422: a booking rule is broken (`rule`). Tenants; "
        "operators for a tenant (`tenant`). Sharded: 421 for a machine another shard keeps.",
        tags=[TAG],
        responses={
            200: {"description": "A retry with the same Idempotency-Key: the same reservation"},
            **responses(409, 421, 422, e409="Overlaps a live reservation (buffers included)",
                        e422="A booking rule is broken: `rule` names it"),
        },
    )
    async def create_reservation(
        request: Request,
        body: ReservationIn,
        who: Annotated[Principal, TENANTS],
        idempotency_key: Annotated[
            str | None, Header(alias="Idempotency-Key", max_length=MAX_KEY_CHARS)
        ] = None,
    ) -> Any:
        if who.role is Role.TENANT:
            if body.tenant is not None and body.tenant != who.subject:
                raise invalid(("body", "tenant"), "a tenant books for itself only")
            tenant = who.subject
        else:
            tenant = body.tenant
            if tenant is None:
                raise invalid(("body", "tenant"), "an operator names the tenant it books for")
        if tenant is None:
            raise HTTPException(403, "this tenant token names no company")
        if body.start is None or body.end is None:
            raise invalid(("body",), "a reservation needs `start` and `end`")
        spec = specs.get(body.machine)
        if spec is None:
            check_owner(gateway.config.shard_layout, who, body.machine, request)
        if spec is None or spec.policy.never:
            return not_offered(body.machine, "/api/reservations")
        now_ms = gateway.clock_ms()
        rules = gateway.config.booking_rules(spec.id)
        spans = offered(spec, min(body.start, now_ms),
                        max(body.end, now_ms) + ALTERNATIVES_AHEAD_MS)
        asked = BookingRequest(spec.id, tenant, body.start, body.end)
        booked = gateway.store.reservations().request(
            asked, rules, spans, now_ms, key=idempotency_key, purpose=body.purpose,
        )
        verdict = booked.verdict
        if isinstance(verdict, Accepted) and booked.reservation is not None:
            answer = _out(booked.reservation).model_dump(mode="json")
            return JSONResponse(answer, status_code=200 if booked.replayed else 201)
        path = "/api/reservations"
        if isinstance(verdict, Conflict):
            store = gateway.store.reservations()
            conflicts = []
            for rid, span in verdict.conflicts:
                theirs = store.get(rid)
                mine = theirs is not None and theirs.tenant == tenant
                conflicts.append(
                    {**_slot(span), "id": rid if mine or who.role is Role.OPERATOR else None}
                )
            detail = "the slot overlaps a live reservation (buffers included): pick one of "\
                     "the alternatives" if verdict.alternatives else \
                     "the slot overlaps a live reservation (buffers included)"
            return JSONResponse(
                problem_body(409, detail, path, conflicts=conflicts,
                             alternatives=[_slot(a) for a in verdict.alternatives]),
                status_code=409, media_type=PROBLEM_JSON,
            )
        assert isinstance(verdict, Refused)
        free = () if verdict.rule != "offer" or not spans else offer_alternatives(
            asked, rules, spans, gateway.store.reservations().list(
                machine=spec.id, from_ms=spans[0][0] - rules.buffer_ms,
                to_ms=spans[-1][1] + rules.buffer_ms, statuses=LIVE,
            ), now_ms,
        )
        return refused(verdict, path, free)

    @routes.get(
        "/api/reservations",
        summary="Reservations overlapping [from, to) (either open), by start; `limit` a page, "
        "a `Link` header gives the next. Tenants: their own; owners: on their machines; "
        "operators: all. Sharded: 421 for a `machine` another shard keeps.",
        tags=[TAG],
        responses={200: {"headers": LINK_HEADER}, **responses(421)},
    )
    async def list_reservations(
        *,
        request: Request,
        response: Response,
        who: Annotated[Principal, EVERYONE],
        machine: Annotated[str | None, Query(max_length=200)] = None,
        from_: Annotated[ApiTime, Query(alias="from")] = None,
        to: ApiTime = None,
        limit: Annotated[int, Query(ge=1, le=MAX_PAGE)] = MAX_PAGE,
        cursor: Cursor = None,
    ) -> list[ReservationOut]:
        if machine is not None and machine not in specs:
            check_owner(gateway.config.shard_layout, who, machine, request)
        after = after_key("reservations", cursor, (int, str))
        tenant = who.subject if who.role is Role.TENANT else None
        found = gateway.store.reservations().list(
            machine=machine, tenant=tenant, from_ms=from_, to_ms=to
        )
        seen = [r for r in found if sees(who, r)]
        shown = set_next(request, response, "reservations", page(seen, limit, _key, after),
                         limit=limit, key=_key)
        after_change = gateway.store.reservations().successors([r.id for r in shown])
        return [_out(r, after_change.get(r.id)) for r in shown]

    @routes.get(
        "/api/reservations/{rid}",
        summary="One reservation. Its tenant, the machine's owner, operators.",
        tags=[TAG],
        responses=responses(404, e404="No reservation with that id that the caller may see"),
    )
    async def get_reservation(rid: str, who: Annotated[Principal, EVERYONE]) -> ReservationOut:
        res = visible(who, rid)
        return _out(res, gateway.store.reservations().successors([rid]).get(rid))

    lifecycle = responses(404, 409, e404="No reservation with that id that the caller may see",
                          e409="Not in a status this step starts from")

    @routes.post(
        "/api/reservations/{rid}/confirm",
        summary="`held` -> `confirmed`, or `requested` where the owner approves bookings. "
        "The tenant holding it; operators.",
        tags=[TAG], responses=lifecycle,
    )
    async def confirm_reservation(rid: str, who: Annotated[Principal, TENANTS]) -> ReservationOut:
        res = visible(who, rid)
        approval = gateway.config.booking_rules(res.machine).approval
        return step(lambda: gateway.store.reservations().confirm(
            rid, gateway.clock_ms(), approval=approval, by=who.name), rid)

    @routes.post(
        "/api/reservations/{rid}/approve",
        summary="`requested` -> `confirmed`. The machine's owner; operators.",
        tags=[TAG], responses=lifecycle,
    )
    async def approve_reservation(
        rid: str, who: Annotated[Principal, OWNERS], body: NoteIn | None = None
    ) -> ReservationOut:
        visible(who, rid)
        note = body.note if body else ""
        return step(lambda: gateway.store.reservations().approve(
            rid, gateway.clock_ms(), by=who.name, note=note), rid)

    @routes.post(
        "/api/reservations/{rid}/reject",
        summary="`requested` -> `rejected`; the time is free again. The machine's owner; "
        "operators.",
        tags=[TAG], responses=lifecycle,
    )
    async def reject_reservation(
        rid: str, who: Annotated[Principal, OWNERS], body: NoteIn | None = None
    ) -> ReservationOut:
        visible(who, rid)
        note = body.note if body else ""
        return step(lambda: gateway.store.reservations().reject(
            rid, gateway.clock_ms(), by=who.name, note=note), rid)

    @routes.post(
        "/api/reservations/{rid}/cancel",
        summary="`held`, `requested` or `confirmed` -> `cancelled`; the time is free again. "
        "Its tenant, the machine's owner, operators.",
        tags=[TAG], responses=lifecycle,
    )
    async def cancel_reservation(
        rid: str, who: Annotated[Principal, EVERYONE], body: NoteIn | None = None
    ) -> ReservationOut:
        visible(who, rid)
        note = body.note if body else ""
        return step(lambda: gateway.store.reservations().cancel(
            rid, gateway.clock_ms(), who.name, note), rid)

    # -- a move or an extension (issue 15): a successor, never an edit ---------------------
    # ``Reservations.change`` checks and inserts the successor and cancels the predecessor in
    # one transaction; the rules of a change: rules/booking/change.py.

    changed = responses(
        404, 409, 422, e404="No reservation with that id that the caller may see",
        e409="Overlaps a live reservation (buffers included: `conflicts`, `alternatives`), or "
        "the reservation is no longer live", e422="A booking rule is broken: `rule` names it",
    )

    def change(
        who: Principal, rid: str, start: int | None, end: int, key: str | None
    ) -> JSONResponse:
        res = visible(who, rid)
        spec = specs.get(res.machine)
        if spec is None or spec.policy.never:
            raise HTTPException(409, f"{res.machine!r} is no longer offered for booking")
        now_ms = gateway.clock_ms()
        begin = res.start_ms if start is None else start
        rules = gateway.config.booking_rules(spec.id)
        spans = offered(spec, min(begin, now_ms), max(end, now_ms) + ALTERNATIVES_AHEAD_MS)
        try:
            booked = gateway.store.reservations().change(
                rid, begin, end, now_ms, rules=rules, offered=spans, by=who.name,
                approval=rules.approval and who.role is Role.TENANT, key=key,
            )
        except ReservationError as e:
            raise HTTPException(409, str(e)) from None
        verdict, path = booked.verdict, f"/api/reservations/{rid}"
        if isinstance(verdict, Accepted) and booked.reservation is not None:
            new = booked.reservation
            return JSONResponse(
                _out(new).model_dump(mode="json"), status_code=200 if booked.replayed else 201,
                headers={"Location": f"/api/reservations/{new.id}"},
            )
        if isinstance(verdict, Conflict):
            store = gateway.store.reservations()
            conflicts = []
            for other, span in verdict.conflicts:
                theirs = store.get(other)
                mine = theirs is not None and theirs.tenant == res.tenant
                # the owner sees every booking of its machine anyway; a tenant only its own
                shown = mine or who.role is not Role.TENANT
                conflicts.append({**_slot(span), "id": other if shown else None})
            return JSONResponse(
                problem_body(409, "the new time overlaps a live reservation (buffers "
                             "included)", path, conflicts=conflicts,
                             alternatives=[_slot(a) for a in verdict.alternatives]),
                status_code=409, media_type=PROBLEM_JSON,
            )
        assert isinstance(verdict, Refused)
        return refused(verdict, path)

    @routes.post(
        "/api/reservations/{rid}/extend",
        status_code=201,
        summary="A new `end` (later; earlier only while the start is further ahead than the "
        "late-cancel threshold): a successor reservation with the same start (`Location`), "
        "in the predecessor's status (`active` stays `active`); the predecessor becomes "
        "`cancelled` and shows `successor`. An `Idempotency-Key` as for POST "
        "/api/reservations. Its tenant, the machine's owner, operators.",
        tags=[TAG],
        responses={200: {"description": "A retry with the same Idempotency-Key"}, **changed},
    )
    async def extend_reservation(
        rid: str,
        body: ExtendIn,
        who: Annotated[Principal, EVERYONE],
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        if body.end is None:
            raise invalid(("body", "end"), "an extension needs `end`")
        return change(who, rid, None, body.end, idempotency_key)

    @routes.post(
        "/api/reservations/{rid}/move",
        status_code=201,
        summary="A new `start` and `end`: a successor reservation (`Location`) as for "
        "extend. Not for an `active` booking (its start has passed), nor closer to its start "
        "than the late-cancel threshold unless the new time covers the old. Its tenant, the "
        "machine's owner, operators.",
        tags=[TAG],
        responses={200: {"description": "A retry with the same Idempotency-Key"}, **changed},
    )
    async def move_reservation(
        rid: str,
        body: MoveIn,
        who: Annotated[Principal, EVERYONE],
        idempotency_key: IdempotencyKey = None,
    ) -> Any:
        if body.start is None or body.end is None:
            raise invalid(("body",), "a move needs `start` and `end`")
        return change(who, rid, body.start, body.end, idempotency_key)
