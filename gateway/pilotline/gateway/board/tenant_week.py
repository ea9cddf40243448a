"""The tenant's week timeline (issue 16): per machine, each day of the span as a row of 96
quarter-hour columns, with the offered, busy and own time laid on it.

Pure: from the API's answers (offers, own reservations) and the machine's offering hours.
The page's CSP allows no ``style`` attribute, so a segment is placed by two classes naming
its first and past-the-last quarter (``f32 t72``: 08:00 to 18:00, board.css). Quarters are
counted on the wall clock of the site's time zone: on the day clocks change, the hour that
repeats is drawn over itself and the one that is skipped stays empty (the times written on
each segment are exact).

Kinds: ``offered`` (free bookable time: the API's slots), ``busy`` (inside the machine's
offering hours and ahead, but neither offered nor the tenant's own: another tenant's booking
with its buffer, or maintenance; anonymous, as the API keeps it), ``mine`` (the tenant's own
bookings, with their status) and ``past``.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime, time, timedelta
from typing import Any, Final
from zoneinfo import ZoneInfo

from pilotline.rules.booking.intervals import Interval, merge, subtract

__all__ = ["ON_TIMELINE", "Day", "Row", "Segment", "days_of", "hm", "local_ms", "row_of",
           "when"]

QUARTER_MS: Final = 15 * 60_000
QUARTERS: Final = 96
ON_TIMELINE: Final = frozenset({"held", "requested", "confirmed", "active", "completed",
                                "no_show", "preempted"})
"""Own bookings drawn on the timeline: cancelled, rejected and expired ones hold no time."""


@dataclass(frozen=True, slots=True)
class Day:
    date: date
    start_ms: int
    end_ms: int

    @property
    def label(self) -> str:
        return f"{self.date:%a} {self.date.day} {self.date:%b}"


@dataclass(frozen=True, slots=True)
class Segment:
    kind: str
    start_ms: int
    end_ms: int
    first: int
    """The first quarter of the day it covers, 0..95."""
    last: int
    """Past its last quarter, 1..96."""
    label: str
    status: str | None = None
    reservation: str | None = None
    slot_end_ms: int | None = None
    """For offered time: where the whole free slot ends (it may go on past this day)."""
    href: str | None = None
    """For offered time: the booking form filled with a slot that fits in it."""


@dataclass(slots=True)
class Row:
    machine: str
    zone: str
    capabilities: list[str]
    owner: str | None
    days: list[list[Segment]] = field(default_factory=list)
    offered_ms: int = 0


def local_ms(day: date, tz: ZoneInfo) -> int:
    """The epoch ms of ``day``'s midnight in ``tz``."""
    return int(datetime.combine(day, time(0), tz).timestamp() * 1000)


def days_of(first: date, count: int, tz: ZoneInfo) -> list[Day]:
    out = []
    for i in range(count):
        d = first + timedelta(days=i)
        out.append(Day(d, local_ms(d, tz), local_ms(d + timedelta(days=1), tz)))
    return out


def _quarter(ms: int, day: Day, tz: ZoneInfo, *, up: bool) -> int:
    """The quarter of ``day`` at ``ms`` on the wall clock; ``up``: rounded up."""
    if ms >= day.end_ms:
        return QUARTERS
    local = datetime.fromtimestamp(ms / 1000, tz)
    minutes = (local.date() - day.date).days * 1440 + local.hour * 60 + local.minute \
        + local.second / 60
    q = math.ceil(minutes / 15) if up else math.floor(minutes / 15)
    return max(0, min(QUARTERS, q))


def hm(ms: int, tz: ZoneInfo, day: Day | None = None) -> str:
    """``14:00``; the end of ``day`` as ``24:00``."""
    if day is not None and ms == day.end_ms:
        return "24:00"
    return datetime.fromtimestamp(ms / 1000, tz).strftime("%H:%M")


def when(ms: int, tz: ZoneInfo) -> str:
    """``Mon 30 Nov 14:00``."""
    t = datetime.fromtimestamp(ms / 1000, tz)
    return f"{t:%a} {t.day} {t:%b %H:%M}"


def _place(
    kind: str, spans: Iterable[Interval], day: Day, tz: ZoneInfo, **extra: Any
) -> list[Segment]:
    out = []
    for a, b in spans:
        start, end = max(a, day.start_ms), min(b, day.end_ms)
        if start >= end:
            continue
        first = _quarter(start, day, tz, up=False)
        last = _quarter(end, day, tz, up=True)
        if first >= QUARTERS:
            first = QUARTERS - 1
        last = max(last, first + 1)
        words = {"offered": "offered", "busy": "busy", "past": "past",
                 "mine": f"your booking ({extra.get('status')})"}[kind]
        label = f"{words}, {day.label} {hm(start, tz)} to {hm(end, tz, day)}"
        out.append(Segment(kind, start, end, first, last, label, **extra))
    return out


def row_of(
    offer: Mapping[str, Any],
    hours: Sequence[Interval],
    mine: Iterable[Mapping[str, Any]],
    days: Sequence[Day],
    *,
    now_ms: int,
    tz: ZoneInfo,
) -> Row:
    """One machine's row. ``offer``: its entry of ``GET /api/offers``; ``hours``: its
    offering policy's hours over the span (for busy time); ``mine``: the tenant's own
    reservations (``GET /api/reservations``), of any machine."""
    machine = offer["machine"]
    slots = [(s["start_ms"], s["end_ms"]) for s in offer["slots"]]
    own = [r for r in mine if r["machine"] == machine and r["status"] in ON_TIMELINE]
    span_start, span_end = days[0].start_ms, days[-1].end_ms
    busy = subtract(
        merge([(max(a, now_ms, span_start), min(b, span_end)) for a, b in hours
               if min(b, span_end) > max(a, now_ms, span_start)]),
        [*slots, *((r["start_ms"], r["end_ms"]) for r in own)],
    )
    row = Row(machine, offer["zone"], list(offer["capabilities"]), offer.get("owner"))
    for day in days:
        cells = _place("past", [(day.start_ms, now_ms)], day, tz)
        cells += _place("busy", busy, day, tz)
        for a, b in slots:
            cells += _place("offered", [(max(a, now_ms), b)], day, tz, slot_end_ms=b)
        for r in own:
            cells += _place("mine", [(r["start_ms"], r["end_ms"])], day, tz,
                            status=r["status"], reservation=r["id"])
        row.days.append(cells)
    row.offered_ms = sum(min(b, span_end) - max(a, now_ms, span_start) for a, b in slots
                         if min(b, span_end) > max(a, now_ms, span_start))
    return row
