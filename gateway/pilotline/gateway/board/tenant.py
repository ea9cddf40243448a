"""The tenant view of the board (issue 16): find offered time, book it, see one's own.

Every figure comes from the API asked as the tenant (``board.ask``): offers, the catalog, the
tenant's own reservations, its usage statement, its calendar feed. Another tenant's booking
never reaches this page: the API's offers leave it out, and the busy time drawn is only the
machine's offering hours (public in the catalog) minus what the API offers and the tenant's
own bookings (tenant_week.py).

Times typed into the booking form (``datetime-local``) are read in the SITE's time zone on
the server, never the browser's: a person in another zone books the site's hours it sees.
A booking form carries an Idempotency-Key made when the form is rendered, so a double submit
holds one slot. Every action is a plain form post (303 back to the page, or the page again
with the API's refusal in words); htmx only refreshes the timeline when the search changes.
"""

from __future__ import annotations

import secrets
from collections.abc import Mapping
from dataclasses import dataclass, replace
from datetime import date, datetime, timedelta
from typing import Annotated, Any, Final
from urllib.parse import urlencode
from zoneinfo import ZoneInfo

from fastapi import APIRouter, Form, Path, Request
from fastapi.responses import RedirectResponse, Response

from pilotline.gateway.board.app import HEADERS, Board, signed_in, with_csrf
from pilotline.gateway.board.internal import Answer
from pilotline.gateway.board.sessions import Session
from pilotline.gateway.board.tenant_week import (
    ON_TIMELINE,
    Row,
    Segment,
    days_of,
    hm,
    local_ms,
    row_of,
    when,
)
from pilotline.gateway.store.tokens import Role
from pilotline.gateway.timefmt import iso, parse_time
from pilotline.rules.booking import allowed

ROLE = Role.TENANT
SPANS: Final = (1, 3, 7, 14)
"""Days a search spans (the API answers at most 31)."""
HISTORY_MS: Final = 30 * 86_400_000
"""Own bookings listed back this far (as the usage statement's default)."""
CANCELLABLE: Final = frozenset({"held", "requested", "confirmed"})
NOTICES: Final = {
    "held": "Held: confirm it below before the hold runs out.",
    "confirmed": "Booked: the slot is yours.",
    "requested": "Sent to the machine's owner, who approves each booking of it.",
    "cancelled": "Cancelled: the time is free again.",
}
"""The notices a redirect may name (``?notice=``): fixed texts, nothing from the URL."""
RULES: Final = {
    "interval": "Start and end", "step": "Time grid", "length": "Booking length",
    "notice": "Notice", "horizon": "Too far ahead", "offer": "Not offered",
    "quota": "Quota", "idempotency": "Already sent", "conflict": "Taken",
}
"""A refusal's heading, by the API's ``rule``."""
RID: Final = r"^r_[A-Za-z0-9_-]{1,64}$"
Rid = Annotated[str, Path(pattern=RID)]
Text = Annotated[str, Form(max_length=100)]


@dataclass(frozen=True, slots=True)
class Search:
    capability: str | None
    zone: str | None
    first: date
    days: int

    def query(self, **more: str) -> str:
        params = {"capability": self.capability, "zone": self.zone,
                  "from": self.first.isoformat(), "days": str(self.days), **more}
        return urlencode({k: v for k, v in params.items() if v})


def read_search(query: Mapping[str, str], today: date) -> tuple[Search, str | None]:
    """The search of the page's query string; a wrong value falls back to its default,
    with a sentence saying so."""
    error = None
    try:
        first = date.fromisoformat(query.get("from") or today.isoformat())
    except ValueError:
        first, error = today, "The first day is not a date: showing from today."
    try:
        days = int(query.get("days") or 7)
    except ValueError:
        days = 7
    if days not in SPANS:
        days = 7
    capability = (query.get("capability") or "").strip()[:64] or None
    zone = (query.get("zone") or "").strip()[:64] or None
    return Search(capability, zone, first, days), error


def local_input(text: str, tz: ZoneInfo) -> int:
    """A ``datetime-local`` value read in the site's zone, as epoch ms; ValueError says why
    not in words. A wall time the clocks skip is refused; one they repeat is the first."""
    try:
        naive = datetime.fromisoformat(text.strip())
    except ValueError:
        raise ValueError("is not a date and time") from None
    if naive.tzinfo is not None:
        raise ValueError("is not a date and time") from None
    aware = naive.replace(tzinfo=tz)
    if datetime.fromtimestamp(aware.timestamp(), tz).replace(tzinfo=None) != naive:
        raise ValueError(f"does not exist in {tz.key}: the clocks skip it")
    return int(aware.timestamp() * 1000)


def input_value(ms: int, tz: ZoneInfo) -> str:
    """Epoch ms as a ``datetime-local`` value in the site's zone."""
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%Y-%m-%dT%H:%M")


def suggest(seg: Segment, terms: Mapping[str, Any], now_ms: int) -> tuple[int, int] | None:
    """A bookable start and end inside an offered segment: its first start on the grid, for
    an hour (or the minimum length), within the free slot; None where none fits."""
    step = int(terms.get("step_s", 900) * 1000) or 60_000
    notice = int(terms.get("min_notice_s", 0) * 1000)
    length = max(int(terms.get("min_length_s", 0) * 1000), 3_600_000)
    start = max(seg.start_ms, now_ms + notice)
    start += -start % step
    end_by = seg.slot_end_ms or seg.end_ms
    end = min(start + length, end_by - end_by % step)
    return (start, end) if start < seg.end_ms and end > start else None


def hours_min(minutes: float) -> str:
    """``2:05`` for 125 minutes."""
    whole = round(minutes)
    return f"{whole // 60}:{whole % 60:02d}"


def add_routes(routes: APIRouter, board: Board) -> None:
    specs = {m.id: m for m in board.gateway.plant_spec.machines}

    def today() -> date:
        return datetime.fromtimestamp(board.gateway.clock_ms() / 1000, board.tz).date()

    async def timeline(
        session: Session, search: Search, catalog: list[dict[str, Any]]
    ) -> dict[str, Any]:
        tz, now_ms = board.tz, board.gateway.clock_ms()
        days = days_of(search.first, search.days, tz)
        start_ms, end_ms = days[0].start_ms, days[-1].end_ms
        offers = await board.ask(session, "GET", "/api/offers", params={
            "capability": search.capability, "zone": search.zone,
            "from": iso(max(start_ms, now_ms) if end_ms > now_ms else start_ms),
            "to": iso(end_ms),
        })
        mine = await board.ask(session, "GET", "/api/reservations",
                               params={"from": iso(start_ms), "to": iso(end_ms)})
        terms = {c["machine"]: c["booking"] for c in catalog}
        rows: list[Row] = []
        for offer in offers.json() if offers.ok else []:
            spec = specs.get(offer["machine"])  # the API listed it: its hours are public
            hours = allowed(spec.policy, start_ms, end_ms) if spec is not None else []
            row = row_of(offer, hours, mine.json() if mine.ok else [], days,
                         now_ms=now_ms, tz=tz)
            for cells in row.days:
                for i, seg in enumerate(cells):
                    if seg.kind != "offered":
                        continue
                    fit = suggest(seg, terms.get(row.machine, {}), now_ms)
                    if fit is not None:
                        cells[i] = replace(seg, label=seg.label + ": book it", href=(
                            "/board/tenant?" + search.query(
                                machine=row.machine, start=input_value(fit[0], tz),
                                end=input_value(fit[1], tz)) + "#book"))
            rows.append(row)
        return {
            "search": search, "days": days, "rows": rows,
            "offers_error": None if offers.ok else _detail(offers),
            "capabilities": sorted({c for m in catalog for c in m["capabilities"]}),
            "zones": sorted({m["zone"] for m in catalog}),
            "offered_hours": round(sum(r.offered_ms for r in rows) / 3_600_000, 1),
            "spans": SPANS,
        }

    async def page(
        request: Request, session: Session, *, status: int = 200, **extra: Any
    ) -> Response:
        tz, now_ms = board.tz, board.gateway.clock_ms()
        search, search_error = read_search(request.query_params, today())
        catalog_answer = await board.ask(session, "GET", "/api/catalog")
        catalog = catalog_answer.json() if catalog_answer.ok else []
        view = await timeline(session, search, catalog)
        if request.headers.get("hx-target") == "timeline" and "hx-history-restore-request" \
                not in request.headers:
            return board.render("tenant_timeline.html", session, oob=True, **view,
                                **_helpers(tz))
        own = await board.ask(session, "GET", "/api/reservations",
                              params={"from": iso(now_ms - HISTORY_MS), "limit": 200})
        bookings = own.json() if own.ok else []
        usage = await board.ask(session, "GET", "/api/usage")
        held = None
        held_id = request.query_params.get("held", "")
        if held_id.startswith("r_") and len(held_id) < 80:
            found = await board.ask(session, "GET", f"/api/reservations/{held_id}")
            held = found.json() if found.ok else None
        hold_until = hm(parse_time(held["hold_until"]), tz) if held else None
        query = request.query_params
        form = {"machine": query.get("machine", ""), "start": query.get("start", ""),
                "end": query.get("end", ""), "purpose": "", "key": secrets.token_urlsafe(16)}
        form.update(extra.pop("form", {}))
        return board.render(
            "tenant.html", session, status=status, **view, **_helpers(tz),
            search_error=search_error, catalog=catalog,
            upcoming=[b for b in bookings if b["end_ms"] > now_ms],
            past=[b for b in reversed(bookings) if b["end_ms"] <= now_ms],
            usage=usage.json() if usage.ok else None,
            held=held, hold_until=hold_until, notice=NOTICES.get(query.get("notice", "")),
            form=form, cancellable=CANCELLABLE, now_ms=now_ms, **extra,
        )

    def back(notice: str, held: str | None = None) -> Response:
        query = {"notice": notice} if held is None else {"notice": notice, "held": held}
        return RedirectResponse("/board/tenant?" + urlencode(query), status_code=303,
                                headers=HEADERS)

    @routes.get("/board/tenant")
    async def tenant_page(
        request: Request, session: Annotated[Session, signed_in(ROLE)]
    ) -> Response:
        return await page(request, session)

    @routes.post("/board/tenant/book")
    async def book(
        *,
        request: Request,
        session: Annotated[Session, with_csrf(ROLE)],
        machine: Annotated[str, Form(max_length=200)] = "",
        start: Text = "",
        end: Text = "",
        purpose: Annotated[str, Form(max_length=1000)] = "",
        key: Text = "",
    ) -> Response:
        form = {"machine": machine, "start": start, "end": end, "purpose": purpose,
                "key": key or secrets.token_urlsafe(16)}
        times: dict[str, int] = {}
        for name, text in (("start", start), ("end", end)):
            try:
                times[name] = local_input(text, board.tz)
            except ValueError as e:
                return await page(request, session, status=422, form=form, refusal={
                    "title": "Start and end", "detail": f"The {name} {e}.",
                    "alternatives": []})
        answer = await board.ask(
            session, "POST", "/api/reservations",
            json={"machine": machine, "start": iso(times["start"]), "end": iso(times["end"]),
                  "purpose": purpose},
            headers={"Idempotency-Key": form["key"]},
        )
        if answer.ok:
            made = answer.json()
            return back(made["status"] if made["status"] in NOTICES else "held",
                        held=made["id"])
        return await page(request, session, status=answer.status, form=form,
                          refusal=_refusal(answer, machine, purpose, board.tz))

    async def step(
        request: Request, session: Session, rid: str, action: str
    ) -> Response:
        answer = await board.ask(session, "POST", f"/api/reservations/{rid}/{action}")
        if answer.ok:
            status = answer.json()["status"]
            return back(status if status in NOTICES else "confirmed",
                        held=rid if status == "held" else None)
        return await page(request, session, status=answer.status,
                          action_error=_detail(answer))

    @routes.post("/board/tenant/reservations/{rid}/confirm")
    async def confirm(
        request: Request, session: Annotated[Session, with_csrf(ROLE)], rid: Rid
    ) -> Response:
        return await step(request, session, rid, "confirm")

    @routes.post("/board/tenant/reservations/{rid}/cancel")
    async def cancel(
        request: Request, session: Annotated[Session, with_csrf(ROLE)], rid: Rid
    ) -> Response:
        return await step(request, session, rid, "cancel")

    @routes.post("/board/tenant/feed")
    async def feed(
        request: Request, session: Annotated[Session, with_csrf(ROLE)]
    ) -> Response:
        """The feed URL, shown once (the API keeps only its hash): on this page's answer,
        not behind a redirect. Issuing again replaces the old URL."""
        answer = await board.ask(session, "POST", "/api/feeds")
        if not answer.ok:
            return await page(request, session, status=answer.status,
                              action_error=_detail(answer))
        # the URL from the board's own address: the in-process call's host is internal
        url = str(request.base_url).rstrip("/") + answer.json()["path"]
        return await page(request, session, feed_url=url)

    @routes.get("/board/tenant/usage.csv")
    async def usage_csv(session: Annotated[Session, signed_in(ROLE)]) -> Response:
        """The API's CSV of the last 30 days, as the tenant (the board holds no token to
        hand the browser, and the session cookie is not an API credential)."""
        answer = await board.ask(session, "GET", "/api/usage", params={"format": "csv"})
        headers = {"Cache-Control": "no-store", "X-Content-Type-Options": "nosniff"}
        if "content-disposition" in answer.headers:
            headers["Content-Disposition"] = answer.headers["content-disposition"]
        return Response(answer.body, status_code=answer.status, headers=headers,
                        media_type=answer.headers.get("content-type", "text/csv"))


def _helpers(tz: ZoneInfo) -> dict[str, Any]:
    """Formatting for the templates, in the site's zone."""
    return {
        "when": lambda ms: when(ms, tz),
        "hm": lambda ms: hm(ms, tz),
        "hours_min": hours_min,
        "day_of": lambda ms: datetime.fromtimestamp(ms / 1000, tz).date(),
        "midnight": lambda d: local_ms(d, tz),
        "next_day": lambda d: d + timedelta(days=1),
        "on_timeline": ON_TIMELINE,
    }


def _end(start_ms: int, end_ms: int, tz: ZoneInfo) -> str:
    """The end's time alone on the start's day, else with its day."""
    same = datetime.fromtimestamp(start_ms / 1000, tz).date() == \
        datetime.fromtimestamp((end_ms - 1) / 1000, tz).date()
    return hm(end_ms, tz) if same and hm(end_ms, tz) != "00:00" else when(end_ms, tz)


def _detail(answer: Answer) -> str:
    body = answer.json() if answer.body else None
    detail = body.get("detail") if isinstance(body, dict) else None
    return detail if isinstance(detail, str) else f"the gateway answered {answer.status}"


def _refusal(answer: Answer, machine: str, purpose: str, tz: ZoneInfo) -> dict[str, Any]:
    """The API's refusal of a booking in words: its rule, its ``detail``, and the
    alternatives it offers (a 409's, or a 422 ``offer``'s) as ready-made bookings."""
    body = answer.json() if answer.body else {}
    body = body if isinstance(body, dict) else {}
    rule = "conflict" if answer.status == 409 else str(body.get("rule", ""))
    alternatives = [
        {"start": input_value(a["start_ms"], tz), "end": input_value(a["end_ms"], tz),
         "label": f"{when(a['start_ms'], tz)} to {_end(a['start_ms'], a['end_ms'], tz)}",
         "machine": machine, "purpose": purpose, "key": secrets.token_urlsafe(16)}
        for a in body.get("alternatives", [])
    ]
    return {"title": RULES.get(rule, "Refused"), "detail": _detail(answer),
            "alternatives": alternatives}
