"""Calendar feeds (issue 15): ``GET /ical/<feed-token>.ics``, and ``/api/feeds`` to get or
revoke one's own feed URL.

A feed URL carries its own secret, a feed token (store/feed_tokens.py), because calendar
clients send no header: the route declares no roles, and the token in the path is the
authentication. Each feed token belongs to one API token (the principal that issued it with
``POST /api/feeds``, or an operator with ``pilotline feed create``) and shows what that
principal may see: a tenant its own bookings, an owner the bookings on its machines with the
tenants named, an operator all. Issuing again rotates (the old URL stops working); ``DELETE
/api/feeds`` or ``pilotline feed revoke`` revokes; revoking the API token revokes its feed.

``?machine=<id>`` on both routes makes (or revokes) a feed of one machine, beside the
caller's general feed, each revoked on its own: operators and the machine's owner see its
bookings with the tenants named (and its offered time); a tenant (of a machine it may book)
sees its own bookings and everyone else's as anonymous busy time. An owner's general feed
and the machine feeds of its owner or an operator also show the offered time of the next
four weeks (feed_offers.py).

A wrong, revoked or malformed feed token is a 404 like any unknown path, found by comparing
SHA-256 hashes in constant time. The token never reaches a log: the audit line
(``api.access``) and the refusal (``api.auth_failed``, reason ``feed``) name the route
template ``/ical/{feed}.ics``, never the path, and uvicorn's own access log is off.
"""

from __future__ import annotations

from typing import Annotated, Final

from fastapi import APIRouter, HTTPException, Query, Request, Response
from pydantic import BaseModel, Field

from pilotline.gateway.api.auth import EVERYONE, PRINCIPAL_KEY, Access, Principal, Role
from pilotline.gateway.api.feed_offers import OFFERS_AHEAD_MS, offered_time
from pilotline.gateway.api.ical import FEED_PAST_MS, SHOWN, calendar
from pilotline.gateway.api.ports import FeedPort
from pilotline.gateway.api.problems import responses
from pilotline.gateway.api.times import Instant
from pilotline.gateway.timefmt import iso
from pilotline.rules.booking import Reservation
from pilotline.rules.spec import MachineSpec

TAG = "booking"
ICAL: Final = "text/calendar; charset=utf-8"
FEED_PATH: Final = "/ical/{feed}.ics"
HOUR_MS: Final = 3_600_000
MachineQuery = Annotated[
    str | None,
    Query(max_length=64, description="A feed of this machine only (operators, its owner, "
          "tenants that may book it)"),
]


class FeedOut(BaseModel):
    url: str = Field(description="the feed's URL: shown this once, only its hash is kept")
    path: str
    created: Instant


def feed_path(token: str) -> str:
    return FEED_PATH.replace("{feed}", token)


def add_routes(routes: APIRouter, gateway: FeedPort) -> None:
    """Adds this group's routes to the app's router."""
    specs = {m.id: m for m in gateway.plant_spec.machines}

    def zone_of(machine: str) -> str:
        return specs[machine].zone if machine in specs else ""

    def names_tenants(who: Principal, spec: MachineSpec) -> bool:
        return who.role is not Role.TENANT and who.sees_owner(spec.owner)

    def feed_machine(who: Principal, machine: str | None) -> str | None:
        """``machine`` if ``who`` may have its feed; 404 for a machine it may not see."""
        if machine is None:
            return None
        spec = specs.get(machine)
        if spec is None or not (
            names_tenants(who, spec) or (who.role is Role.TENANT and not spec.policy.never)
        ):
            raise HTTPException(404, f"no machine {machine!r}")
        return machine

    def offers(machines: list[MachineSpec], now_ms: int) -> list[tuple[str, tuple[int, int]]]:
        start = now_ms - now_ms % HOUR_MS  # from the hour: stable UIDs between polls
        end = start + OFFERS_AHEAD_MS
        book = gateway.store.reservations()
        out = []
        for spec in machines:
            rules = gateway.config.booking_rules(spec.id)
            near = book.list(machine=spec.id, from_ms=start - rules.buffer_ms,
                             to_ms=end + rules.buffer_ms)
            maintenance = gateway.config.maintenance(spec.id)
            out += [(spec.id, span) for span in offered_time(
                spec, rules, maintenance, near, from_ms=start, to_ms=end, now_ms=now_ms)]
        return out

    @routes.post(
        "/api/feeds",
        status_code=201,
        summary="A calendar feed URL of the caller's bookings (a tenant: its own; an owner: "
        "on its machines; operators: all), shown this once; issuing again replaces the "
        "previous URL (of the same machine, with `machine`). Operators, owners, tenants.",
        tags=[TAG],
        responses=responses(404, e404="No such machine the caller may see"),
    )
    async def create_feed(
        request: Request,
        response: Response,
        who: Annotated[Principal, EVERYONE],
        machine: MachineQuery = None,
    ) -> FeedOut:
        now_ms = gateway.clock_ms()
        scope = feed_machine(who, machine)
        token = gateway.store.feeds.issue(who.name, now_ms=now_ms, machine=scope)
        path = feed_path(token)
        response.headers["Cache-Control"] = "no-store"
        base = str(request.base_url).rstrip("/")
        return FeedOut(url=base + path, path=path, created=iso(now_ms))

    @routes.delete(
        "/api/feeds",
        status_code=204,
        summary="Revoke the caller's calendar feed URL (of one machine, with `machine`). "
        "Operators, owners, tenants.",
        tags=[TAG],
        responses=responses(404, e404="The caller has no active feed"),
    )
    async def revoke_feed(
        who: Annotated[Principal, EVERYONE], machine: MachineQuery = None
    ) -> Response:
        if not gateway.store.feeds.revoke(who.name, now_ms=gateway.clock_ms(), machine=machine):
            raise HTTPException(404, "no active calendar feed")
        return Response(status_code=204)

    @routes.get(
        FEED_PATH,
        summary="A calendar (RFC 5545) of the bookings the feed's principal may see. No "
        "bearer token: the feed token in the path is the credential (POST /api/feeds).",
        tags=[TAG],
        response_class=Response,
        responses={
            200: {"content": {ICAL: {"schema": {"type": "string"}}}},
            **responses(404, e404="No such feed (unknown, revoked or malformed token)"),
        },
    )
    async def get_feed(request: Request, feed: str) -> Response:
        access: Access = request.app.state.access
        who = gateway.store.feeds.authenticate(feed)
        if who is None or who.role is Role.SCRAPER:
            raise access.refuse(request, 404, "feed", "no such calendar feed")
        request.scope[PRINCIPAL_KEY] = who  # audited as api.access, by route template
        book = gateway.store.reservations()
        now_ms = gateway.clock_ms()
        since = now_ms - FEED_PAST_MS
        machine = gateway.store.feeds.machine_of(feed)
        if machine is not None:
            spec = specs.get(machine)
            if spec is None:  # no longer configured
                raise access.refuse(request, 404, "feed", "no such calendar feed")
            named = names_tenants(who, spec)

            def busy(r: Reservation) -> bool:
                return not named and r.tenant != who.subject

            body = calendar(
                f"pilotline bookings: {machine}",
                book.list(machine=machine, from_ms=since, statuses=SHOWN),
                book.events,
                tenants=named,
                zone_of=zone_of,
                busy=busy,
                offered=offers([spec], now_ms) if named else (),
                now_ms=now_ms,
            )
        else:
            tenant = who.subject if who.role is Role.TENANT else None
            shown = [
                r for r in book.list(tenant=tenant, from_ms=since, statuses=SHOWN)
                if who.role is not Role.OWNER
                or (r.machine in specs and who.sees_owner(specs[r.machine].owner))
            ]
            mine = [m for m in specs.values() if who.sees_owner(m.owner)]
            body = calendar(
                f"pilotline bookings: {who.subject or 'all'}",
                shown,
                book.events,
                tenants=who.role is not Role.TENANT,
                zone_of=zone_of,
                offered=offers(mine, now_ms) if who.role is Role.OWNER else (),
                now_ms=now_ms,
            )
        return Response(
            body,
            media_type=ICAL,
            headers={"Cache-Control": "private, max-age=300", "Referrer-Policy": "no-referrer"},
        )
