"""The owner view of the board (issue 16): its machines' week, the requests it must answer,
how they were used, and the offering policy the gateway applies to them.

Everything on the page is one of the API's answers, asked as the signed-in owner (so the
API's filter, "owners: their own machines", is the page's filter too):

- ``GET /api/usage`` (default: the 30 days to now) gives the bookings of the past weeks, and
  its ``generated`` instant is the gateway's "now" for the rest of the page (the gateway's
  own clock, not the browser's nor this process's wall clock);
- ``GET /api/catalog``: its machines, their offering policy, booking rules and charge;
- ``GET /api/machines``: each machine's state now;
- ``GET /api/offers`` (now to the end of the week shown): the time still free to book;
- ``GET /api/reservations`` (from the start of today on): the bookings on the timeline, with
  their tenants, and the requests awaiting approval;
- ``GET /api/utilization``: the last 7 days, and each of the three weeks before, exactly.

What the weekly hours mean is said on the page next to them (``owner.html``); the
computation is here, in ``weekly_hours``.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Annotated, Any, Final, Literal
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, HTTPException, Path, Query
from fastapi.responses import RedirectResponse, Response

from pilotline.gateway.board.app import HEADERS, Board, signed_in, with_csrf
from pilotline.gateway.board.sessions import Session
from pilotline.gateway.store.tokens import Role

ROLE = Role.OWNER
HOUR_MS: Final = 3_600_000
DAY_MS: Final = 24 * HOUR_MS
WEEK_MS: Final = 7 * DAY_MS
PAST_WEEKS: Final = 4
"""Periods of 7 days back from now in the weekly table (the usage statement's default 30
days cover them)."""
STATES: Final = ("running", "idle", "down", "maintenance", "offline")
"""``/api/utilization``'s states, in the dashboards' order."""
TAKEN: Final = frozenset({"confirmed", "active", "completed", "no_show", "preempted"})
"""A booking whose time was the tenant's (service/usage.py ``METERED``): booked hours."""
LIVE: Final = frozenset({"held", "requested", "confirmed", "active"})
"""A booking that holds its time now (rules/booking ``LIVE``): on the timeline."""
RID: Final = r"^[A-Za-z0-9_-]{1,100}$"
NEXT_CURSOR: Final = re.compile(r"[?&]cursor=([A-Za-z0-9_-]+)[^>]*>;\s*rel=\"next\"")
MAX_PAGES: Final = 50
"""At most this many pages of reservations (1,000 each) on one page of the board."""


def add_routes(routes: APIRouter, board: Board) -> None:
    @routes.get("/board/owner")
    async def owner_page(
        session: Annotated[Session, signed_in(ROLE)],
        done: Annotated[Literal["approved", "rejected"] | None, Query()] = None,
        rid: Annotated[str | None, Query(alias="id", pattern=RID)] = None,
    ) -> Response:
        message = None
        if done is not None and rid is not None:
            message = f"Request {rid} {done}: " + (
                "it is confirmed." if done == "approved" else "its time is free again."
            )
        return await _page(board, session, message=message)

    @routes.post("/board/owner/reservations/{rid}/{action}")
    async def answer_request(
        session: Annotated[Session, with_csrf(ROLE)],
        rid: Annotated[str, Path(pattern=RID)],
        action: Literal["approve", "reject"],
        note: Annotated[str, Form(max_length=1000)] = "",
    ) -> Response:
        answer = await board.ask(session, "POST", f"/api/reservations/{rid}/{action}",
                                 json={"note": note.strip()})
        if not answer.ok:
            detail = (answer.json() or {}).get("detail") if answer.body else None
            error = f"Request {rid} was not {action}d: {detail or 'the gateway refused it'}."
            return await _page(board, session, error=error, status=answer.status)
        done = "approved" if action == "approve" else "rejected"
        return RedirectResponse(f"/board/owner?done={done}&id={rid}#requests", status_code=303,
                                headers=HEADERS)


# -- the page -----------------------------------------------------------------------------


async def _page(
    board: Board, session: Session, *, message: str | None = None, error: str | None = None,
    status: int = 200,
) -> Response:
    usage = await _json(board, session, "/api/usage")
    now_ms = _ms(usage["generated"])
    tz = board.tz
    day0 = datetime.fromtimestamp(now_ms / 1000, tz).replace(hour=0, minute=0, second=0,
                                                              microsecond=0)
    start_ms = int(day0.timestamp() * 1000)
    days = [day0 + timedelta(days=d) for d in range(8)]  # DST-safe: local midnights
    end_ms = int(days[7].timestamp() * 1000)

    catalog = await _json(board, session, "/api/catalog")
    machines = {m["id"]: m for m in await _json(board, session, "/api/machines")}
    offers = {o["machine"]: o for o in await _json(
        board, session, "/api/offers", params={"from": now_ms, "to": now_ms + WEEK_MS})}
    bookings = await _all(board, session, "/api/reservations", {"from": start_ms})
    weeks = [(now_ms - (k + 1) * WEEK_MS, now_ms - k * WEEK_MS) for k in range(PAST_WEEKS)]
    utilization = [
        await _json(board, session, "/api/utilization", params={"from": a, "to": b})
        for a, b in weeks
    ]

    ids = [entry["machine"] for entry in catalog]
    timeline = Timeline(start_ms, end_ms, now_ms, tz, days)
    rows = [
        timeline.row(
            entry, machines.get(entry["machine"]),
            list(offers.get(entry["machine"], {}).get("slots", [])),
            [b for b in bookings if b["machine"] == entry["machine"] and b["status"] in LIVE],
        )
        for entry in catalog
    ]
    requests = sorted((b for b in bookings if b["status"] == "requested"),
                      key=lambda b: b["start_ms"])
    shown = [b for b in bookings if b["end_ms"] > start_ms and b["start_ms"] < end_ms]
    return board.render(
        "owner.html", session, status=status,
        message=message, error=error,
        now=_when(now_ms, tz), tz_name=tz.key,
        timeline=timeline, rows=rows,
        requests=[_booking(b, tz) for b in requests],
        bookings=[_booking(b, tz) for b in shown],
        utilization=_utilization(utilization[0], ids, machines),
        utilization_from=_when(weeks[0][0], tz),
        weekly=weekly_hours(ids, now_ms, offers=offers, bookings=bookings, lines=usage["lines"],
                            utilization=utilization, tz=tz),
        policies=[_policy(entry) for entry in catalog],
        hours=_hours,
        percent=_percent,
    )


async def _json(
    board: Board, session: Session, path: str, params: dict[str, Any] | None = None
) -> Any:
    answer = await board.ask(session, "GET", path, params=params)
    if not answer.ok:  # the page cannot be drawn without it: say which answer failed
        raise HTTPException(502, f"the gateway's {path} answered {answer.status}")
    return answer.json()


async def _all(
    board: Board, session: Session, path: str, params: dict[str, Any]
) -> list[dict[str, Any]]:
    """Every page of a paged list (its ``Link: <...cursor=...>; rel="next"``)."""
    items: list[dict[str, Any]] = []
    cursor = None
    for _ in range(MAX_PAGES):
        answer = await board.ask(session, "GET", path, params={**params, "cursor": cursor})
        if not answer.ok:
            raise HTTPException(502, f"the gateway's {path} answered {answer.status}")
        items.extend(answer.json())
        found = NEXT_CURSOR.search(answer.headers.get("link", ""))
        if found is None:
            break
        cursor = found.group(1)
    return items


# -- the week timeline --------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Block:
    """A span drawn on a machine's week: x and width in percent of the week."""

    kind: str  # "free", or a booking's status
    x: float
    width: float
    label: str
    title: str


@dataclass(frozen=True, slots=True)
class Row:
    machine: str
    zone: str
    state: str | None
    state_since: str | None
    offered: bool
    blocks: list[Block]
    free_h: float
    booked: int
    summary: str


@dataclass(frozen=True, slots=True)
class Timeline:
    start_ms: int
    end_ms: int
    now_ms: int
    tz: ZoneInfo
    days: Sequence[datetime]
    ticks: list[tuple[float, str]] = field(default_factory=list)

    def __post_init__(self) -> None:
        for day in self.days[:7]:
            self.ticks.append((self.x(int(day.timestamp() * 1000)), day.strftime("%a %d %b")))

    @property
    def now_x(self) -> float:
        return self.x(self.now_ms)

    def x(self, ms: int) -> float:
        span = self.end_ms - self.start_ms
        return round(100 * (min(max(ms, self.start_ms), self.end_ms) - self.start_ms) / span, 3)

    def block(self, kind: str, a: int, b: int, label: str, title: str) -> Block | None:
        x0, x1 = self.x(a), self.x(b)
        if x1 <= x0:
            return None
        # a tenant's name only where it fits (about 10 hours of the week); always in the title
        return Block(kind, x0, round(x1 - x0, 3), label if x1 - x0 >= 6 else "", title)

    def row(
        self, entry: Mapping[str, Any], machine: Mapping[str, Any] | None,
        slots: Iterable[Mapping[str, Any]], bookings: Iterable[Mapping[str, Any]],
    ) -> Row:
        blocks: list[Block] = []
        free_ms = 0
        for slot in slots:
            a, b = max(slot["start_ms"], self.start_ms), min(slot["end_ms"], self.end_ms)
            free_ms += max(0, b - a)
            made = self.block("free", a, b, "",
                              f"free to book {_span(a, b, self.tz)}")
            if made:
                blocks.append(made)
        count = 0
        for res in bookings:
            made = self.block(
                res["status"], res["start_ms"], res["end_ms"], res["tenant"],
                f"{res['tenant']}, {res['status']}, "
                f"{_span(res['start_ms'], res['end_ms'], self.tz)}",
            )
            if made:
                blocks.append(made)
                count += 1
        state = machine["state"] if machine else None
        free_h = free_ms / HOUR_MS
        summary = (f"{entry['machine']}: {_hours(free_h)} free to book, "
                   f"{count} booking{'s' if count != 1 else ''} this week"
                   + (f", {state} now" if state else ""))
        return Row(entry["machine"], entry["zone"], state,
                   _when(_ms(machine["since"]), self.tz) if machine and machine.get("since")
                   else None, entry["offered"], blocks, free_h, count, summary)


# -- the tables ---------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Share:
    state: str
    share: float  # 0..1, the API's figure
    seconds: float
    x: float  # where its bar starts, percent


def _utilization(
    answer: Mapping[str, Any], ids: Sequence[str], machines: Mapping[str, Any]
) -> list[dict[str, Any]]:
    by_id = {m["machine"]: m for m in answer["machines"]}
    out = []
    for mid in ids:
        usage = by_id.get(mid)
        if usage is None:
            continue
        shares, x = [], 0.0
        for state in STATES:
            share = usage["shares"][state]
            shares.append(Share(state, share, usage["seconds"][state], round(100 * x, 3)))
            x += share
        out.append({"machine": mid, "state": (machines.get(mid) or {}).get("state"),
                    "shares": shares, "period_h": usage["period_s"] / 3600})
    return out


@dataclass(frozen=True, slots=True)
class WeekHours:
    period: str
    future: bool
    offered_h: float | None
    booked_h: float
    used_h: float | None
    running_h: float | None
    idle_h: float | None


def weekly_hours(
    ids: Sequence[str], now_ms: int, *, offers: Mapping[str, Mapping[str, Any]],
    bookings: Sequence[Mapping[str, Any]], lines: Sequence[Mapping[str, Any]],
    utilization: Sequence[Mapping[str, Any]], tz: ZoneInfo,
) -> dict[str, list[WeekHours]]:
    """Per machine: the next 7 days, then each 7 days back from now (the page says what
    each figure means).

    Next 7 days: offered = still free to book (``/api/offers``) plus booked; booked = live
    bookings (requested, confirmed, active) inside the 7 days; used, running and idle are not
    known yet. Past periods: booked and used = ``/api/usage``'s ``booked_min`` and
    ``used_min`` of the bookings that START in the period and whose time was the tenant's
    (confirmed, active, completed, no-show, pre-empted); running and idle =
    ``/api/utilization``'s seconds over the period; offered = not known (the gateway keeps no
    record of what its policy offered in the past).
    """
    ahead = now_ms + WEEK_MS
    out: dict[str, list[WeekHours]] = {}
    for mid in ids:
        free = sum(max(0, min(s["end_ms"], ahead) - max(s["start_ms"], now_ms))
                   for s in offers.get(mid, {}).get("slots", []))
        booked = sum(max(0, min(b["end_ms"], ahead) - max(b["start_ms"], now_ms))
                     for b in bookings if b["machine"] == mid
                     and b["status"] in {"requested", "confirmed", "active"})
        rows = [WeekHours(f"next 7 days (to {_when(ahead, tz)})", True,
                          (free + booked) / HOUR_MS, booked / HOUR_MS, None, None, None)]
        for k, answer in enumerate(utilization):
            a, b = now_ms - (k + 1) * WEEK_MS, now_ms - k * WEEK_MS
            mine = [line for line in lines if line["machine"] == mid
                    and line["status"] in TAKEN and a <= _ms(line["start"]) < b]
            usage = next((m for m in answer["machines"] if m["machine"] == mid), None)
            label = "last 7 days" if k == 0 else f"{7 * k} to {7 * (k + 1)} days ago"
            rows.append(WeekHours(
                f"{label} ({_day(a, tz)} to {_day(b, tz)})", False, None,
                sum(line["booked_min"] for line in mine) / 60,
                sum(line["used_min"] for line in mine) / 60,
                None if usage is None else usage["seconds"]["running"] / 3600,
                None if usage is None else usage["seconds"]["idle"] / 3600,
            ))
        out[mid] = rows
    return out


def _policy(entry: Mapping[str, Any]) -> dict[str, Any]:
    booking = entry["booking"]
    charge = entry.get("charge")
    return {
        "machine": entry["machine"],
        "offered": entry["offered"],
        "offering": entry["offering"],
        "rules": booking["rules"],
        "approval": booking["approval"],
        "charge": charge["text"] if charge else "free: no charge rule is set",
    }


def _booking(res: Mapping[str, Any], tz: ZoneInfo) -> dict[str, Any]:
    return {
        "id": res["id"], "machine": res["machine"], "tenant": res["tenant"],
        "status": res["status"], "when": _span(res["start_ms"], res["end_ms"], tz),
        "hours": _hours((res["end_ms"] - res["start_ms"]) / HOUR_MS),
        "purpose": res.get("purpose") or "",
        "created": _when(_ms(res["created"]), tz) if res.get("created") else "",
    }


# -- formatting ---------------------------------------------------------------------------


def _ms(text: str) -> int:
    return int(datetime.fromisoformat(text).timestamp() * 1000)


def _when(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%a %d %b %H:%M")


def _day(ms: int, tz: ZoneInfo) -> str:
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%a %d %b")


def _span(a: int, b: int, tz: ZoneInfo) -> str:
    start = datetime.fromtimestamp(a / 1000, tz)
    end = datetime.fromtimestamp(b / 1000, tz)
    tail = end.strftime("%H:%M") if end.date() == start.date() else end.strftime(
        "%a %d %b %H:%M")
    return f"{start.strftime('%a %d %b %H:%M')} to {tail}"


def _hours(h: float) -> str:
    whole, minutes = divmod(round(h * 60), 60)
    if h > 0 and not whole and not minutes:
        return "< 1 min"  # some time, not none
    return f"{whole} h {minutes:02d} min" if minutes else f"{whole} h"


def _percent(share: float) -> str:
    """The API's share (0..1) as a percentage with one decimal; a share too small to show
    as 0.1 % says so rather than 0.0 %."""
    if 0 < share < 0.0005:
        return "< 0.1 %"
    return f"{100 * share:.1f} %"
