"""The operator view of the board (issue 16): the live plant.

Every machine's state and capacity by zone, the alerts pending and firing, the health of each
collector and sink, and the bookings holding a machine now: all from the API's own answers
asked as the signed-in operator (``/api/machines``, ``/api/capacity``, ``/api/alerts``,
``/health``, ``/api/reservations``), never from the store.

The page updates itself by htmx polling: the plant section asks
``/board/operator/plant?v=<digest>`` every 2 s and replaces itself with the answer. An
unchanged plant answers 204 (htmx then swaps nothing), so the DOM changes only when the plant
did. Polling rather than server-sent events: htmx 2 needs a second vendored file for SSE; a
stream holds one of the API's capped connections per open tab for hours on a 2-core edge box;
and each poll is an ordinary request, so the session (sign-out, a revoked token, expiry) is
checked on every one by the same dependency as a page, with nothing to end. 2 s is well
inside the "within a few seconds" of the issue.
"""

from __future__ import annotations

import hashlib
from collections import Counter
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Annotated, Any, Final
from zoneinfo import ZoneInfo

import orjson
from fastapi import APIRouter, Query
from fastapi.responses import Response

from pilotline.gateway.board.app import HEADERS, Board, signed_in
from pilotline.gateway.board.sessions import Session
from pilotline.gateway.store.tokens import Role

__all__ = ["POLL_S", "add_routes"]

ROLE = Role.OPERATOR
POLL_S: Final = 2
"""How often the open page asks for the plant."""
STATES: Final = ("running", "idle", "down", "maintenance", "offline")
LIVE: Final = frozenset({"held", "requested", "confirmed", "active"})
"""Booking statuses that hold a machine (``rules.booking.capacity``)."""


def add_routes(routes: APIRouter, board: Board) -> None:
    @routes.get("/board/operator")
    async def operator_page(session: Annotated[Session, signed_in(ROLE)]) -> Response:
        plant = await read_plant(board, session)
        return board.render("operator.html", session, plant=plant, poll_s=POLL_S)

    @routes.get("/board/operator/plant")
    async def operator_plant(
        session: Annotated[Session, signed_in(ROLE)],
        v: Annotated[str | None, Query(max_length=64)] = None,
    ) -> Response:
        plant = await read_plant(board, session)
        if v is not None and v == plant.digest:
            return Response(status_code=204, headers=HEADERS)  # nothing changed: no swap
        return board.render("operator_plant.html", session, plant=plant, poll_s=POLL_S)


@dataclass(frozen=True, slots=True)
class Zone:
    name: str
    machines: list[dict[str, Any]]
    states: dict[str, int]
    bookable: int
    waiting: int  # idle, but too briefly or outside the offering policy
    reserved: int


@dataclass(frozen=True, slots=True)
class Plant:
    zones: list[Zone]
    alerts: list[dict[str, Any]]
    health: list[dict[str, Any]]
    healthy: bool
    bookings: list[dict[str, Any]]
    problems: list[str]
    digest: str


async def read_plant(board: Board, session: Session) -> Plant:
    """The plant as the API tells the session's operator, with a digest of what is shown."""
    tz = board.tz
    problems: list[str] = []

    async def ask(path: str, params: dict[str, Any] | None = None, *, ok: tuple[int, ...] = ()
                  ) -> Any:
        answer = await board.ask(session, "GET", path, params=params)
        if answer.ok or answer.status in ok:
            return answer.json()
        problems.append(f"{path} answered {answer.status}")
        return None

    machines: list[dict[str, Any]] = await ask("/api/machines") or []
    capacity: dict[str, Any] = await ask("/api/capacity") or {}
    alerts: list[dict[str, Any]] = await ask("/api/alerts") or []
    health: dict[str, Any] = await ask("/health", ok=(503,)) or {}  # 503: unhealthy, still said
    now = _instant(capacity.get("at")) or datetime.now(tz)
    found = await ask("/api/reservations", {
        "from": _iso(now), "to": _iso(now + timedelta(milliseconds=1)),
    }) or []

    offered = {c["machine"]: c for c in capacity.get("available", [])}
    waiting = {c["machine"]: c for c in capacity.get("idle_not_yet_available", [])}
    zones: dict[str, list[dict[str, Any]]] = {}
    for m in machines:
        zones.setdefault(m["zone"], []).append(
            _machine(m, offered.get(m["id"]), waiting.get(m["id"]), tz)
        )
    shown_zones = [
        Zone(
            name=name,
            machines=rows,
            states=dict(Counter(r["state"] for r in rows)),
            bookable=sum(r["capacity"] == "bookable" for r in rows),
            waiting=sum(r["capacity"] == "waiting" for r in rows),
            reserved=sum(r["capacity"] == "reserved" for r in rows),
        )
        for name, rows in sorted(zones.items())
    ]
    shown_alerts = [
        {
            "rule": a["rule"], "machine": a["machine"], "zone": a["zone"],
            "severity": a["severity"], "status": a["status"], "message": a["message"],
            "since": _local(a["firing_since"] or a["since"], tz),
            "acked_by": a.get("acked_by"), "silenced": bool(a.get("silenced_by")),
        }
        for a in alerts
    ]
    parts = [
        {"name": name, "healthy": bool(part.get("healthy")), "why": part.get("why")}
        for name, part in health.items()
        if isinstance(part, dict)
    ]
    bookings = [
        {
            "id": r["id"], "machine": r["machine"], "tenant": r["tenant"], "status": r["status"],
            "start": _local(r["start"], tz), "end": _local(r["end"], tz),
        }
        for r in found
        if r["status"] in LIVE
    ]
    shown = {"zones": [(z.name, z.machines) for z in shown_zones], "alerts": shown_alerts,
             "health": parts, "bookings": bookings, "problems": problems}
    digest = hashlib.sha256(orjson.dumps(shown, option=orjson.OPT_SORT_KEYS)).hexdigest()[:32]
    return Plant(
        zones=shown_zones, alerts=shown_alerts, health=parts,
        healthy=bool(health.get("healthy")), bookings=bookings, problems=problems,
        digest=digest,
    )


def _machine(
    m: dict[str, Any], offered: dict[str, Any] | None, waiting: dict[str, Any] | None,
    tz: ZoneInfo,
) -> dict[str, Any]:
    """One row of the plant table; ``capacity`` is one of bookable, waiting, reserved, none."""
    booking = m.get("booking")
    if booking is not None:
        capacity = "reserved"
        detail = (f"{booking['tenant']} ({booking['status']}) until "
                  f"{_local(booking['until'], tz)}")
    elif offered is not None:
        capacity = "bookable"
        until = offered.get("offered_until")
        detail = f"offered until {_local(until, tz)}" if until else "offered, open-ended"
    elif waiting is not None:
        capacity = "waiting"
        detail = ("idle, outside its offering policy" if waiting.get("available")
                  else f"idle, offered from {_local(waiting.get('available_since'), tz)}")
    else:
        capacity, detail = "none", "not idle"
    return {
        "id": m["id"], "owner": m["owner"], "capabilities": m["capabilities"],
        "state": m["state"] if m["state"] in STATES else "offline",
        "pending": m.get("pending"), "since": _local(m.get("since"), tz),
        "capacity": capacity, "capacity_detail": detail,
    }


def _instant(text: str | None) -> datetime | None:
    return None if not text else datetime.fromisoformat(text)


def _iso(at: datetime) -> str:
    return at.isoformat(timespec="milliseconds")


def _local(text: str | None, tz: ZoneInfo) -> str:
    """An API instant in the site's time zone: the time alone today, with the date otherwise
    (the page names the zone once, in its header)."""
    at = _instant(text)
    if at is None:
        return "—"
    local = at.astimezone(tz)
    if local.date() == datetime.now(tz).date():
        return local.strftime("%H:%M:%S")
    return local.strftime("%a %d %b %H:%M")
