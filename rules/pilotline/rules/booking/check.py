"""Is a request bookable? Every rule in one pure function, with a verdict a person can act on.

The shell calls ``check`` inside the store transaction that then inserts the reservation, so
the conflict check and the insert are one step whatever the concurrency (no double booking).
Rules are checked in a fixed order and the first broken one is reported: the interval itself,
the grid, the length, the notice, the horizon, the offer, the quota, then conflicts (which
come with the nearest free alternatives of the same length).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime

from pilotline.rules.booking.intervals import Interval, merge, overlaps, subtract
from pilotline.rules.booking.reservation import BookingRules, Request, Reservation

MONDAY_MS = 4 * 86_400_000
"""1970-01-05T00:00Z, a Monday: quota periods of a week start on Mondays (UTC)."""

ALTERNATIVES = 3
DAY_MS = 86_400_000


@dataclass(frozen=True, slots=True)
class Accepted:
    """Bookable: the shell holds it until ``hold_until_ms``."""

    hold_until_ms: int


@dataclass(frozen=True, slots=True)
class Conflict:
    """Overlaps live reservations (buffers included): their ids and blocked intervals, and
    the nearest free slots of the requested length."""

    conflicts: tuple[tuple[str, Interval], ...]
    alternatives: tuple[Interval, ...]


@dataclass(frozen=True, slots=True)
class Refused:
    """A rule broken: ``rule`` is a stable name (``length``, ``notice``, ...), ``message``
    the sentence shown to the person who asked."""

    rule: str
    message: str


Verdict = Accepted | Conflict | Refused


def _minutes(ms: int) -> str:
    minutes = ms / 60_000
    if minutes >= 120 and minutes % 60 == 0:
        return f"{minutes / 60:.0f} h"
    return f"{minutes:.0f} min"


def _period(ms: int) -> str:
    """A quota period in words (config/booking.py: a day, a week, or a month of 30 days)."""
    named = {DAY_MS: "day", 7 * DAY_MS: "week"}.get(ms)
    if named is not None:
        return named
    return f"{ms // DAY_MS}-day period" if ms % DAY_MS == 0 else f"{_minutes(ms)} period"


def _day(ms: int) -> str:
    return datetime.fromtimestamp(ms // 1000, tz=UTC).date().isoformat()


def blocked(reservations: Iterable[Reservation], buffer_ms: int, *, skip: str | None = None) -> list[tuple[str, Interval]]:  # noqa: E501
    """The time each live reservation holds, its buffer on both sides."""
    return [
        (r.id, (r.start_ms - buffer_ms, r.end_ms + buffer_ms))
        for r in reservations
        if r.live and r.id != skip
    ]


def check(
    request: Request,
    rules: BookingRules,
    reservations: Sequence[Reservation],
    offered: Sequence[Interval],
    now_ms: int,
) -> Verdict:
    """``reservations``: the machine's (any status; only live ones hold time, the tenant's
    count for its quota); ``offered``: the machine's offered intervals around the request
    (its policy minus planned maintenance)."""
    start, end = request.start_ms, request.end_ms
    length = end - start
    if length <= 0:
        return Refused("interval", "the end must come after the start")
    step = rules.step_ms
    if step > 0 and (start % step or end % step):
        return Refused("step", f"bookings start and end on a {_minutes(step)} grid")
    if length < rules.min_length_ms:
        return Refused("length", f"at least {_minutes(rules.min_length_ms)} per booking")
    if rules.max_length_ms and length > rules.max_length_ms:
        return Refused("length", f"at most {_minutes(rules.max_length_ms)} per booking")
    # a change (``replaces``) keeps its predecessor's granted time: a start it keeps needs no
    # notice (an active booking's lies in the past), and its old time stays offered
    prev = next((r for r in reservations if r.id == request.replaces), None) \
        if request.replaces is not None else None
    kept = prev is not None and prev.start_ms == start
    if not kept and start < now_ms + rules.min_notice_ms:
        if start < now_ms:
            return Refused("notice", "the start is in the past")
        return Refused("notice", f"book at least {_minutes(rules.min_notice_ms)} ahead")
    if rules.horizon_ms and end > now_ms + rules.horizon_ms:
        return Refused("horizon", f"book at most {_minutes(rules.horizon_ms)} ahead")
    granted = offered if prev is None else merge([*offered, (prev.start_ms, prev.end_ms)])
    if not any(o_start <= start and end <= o_end for o_start, o_end in granted):
        return Refused("offer", "the machine is not offered for all of that time")
    if rules.quota_ms:
        period = rules.quota_period_ms
        p_start = start - (start - MONDAY_MS) % period
        used = sum(
            max(0, min(r.end_ms, p_start + period) - max(r.start_ms, p_start))
            for r in reservations
            if r.live and r.tenant == request.tenant and r.id != request.replaces
        )
        if used + length > rules.quota_ms:
            left = max(0, rules.quota_ms - used)
            return Refused(
                "quota",
                f"over the quota of {_minutes(rules.quota_ms)} per {_period(period)}:"
                f" {_minutes(left)} left in the {_period(period)} from {_day(p_start)} (UTC)",
            )
    held = blocked(reservations, rules.buffer_ms, skip=request.replaces)
    clashes = tuple((rid, span) for rid, span in held if overlaps(span, (start, end)))
    if clashes:
        return Conflict(clashes, alternatives(request, rules, held, offered, now_ms))
    return Accepted(now_ms + rules.hold_ms)


def alternatives(
    request: Request,
    rules: BookingRules,
    held: Sequence[tuple[str, Interval]],
    offered: Sequence[Interval],
    now_ms: int,
) -> tuple[Interval, ...]:
    """Up to ``ALTERNATIVES`` free slots of the requested length on the grid, nearest to the
    requested start first, within notice and horizon."""
    length = request.end_ms - request.start_ms
    step = rules.step_ms or 60_000
    earliest = now_ms + rules.min_notice_ms
    latest = now_ms + rules.horizon_ms if rules.horizon_ms else None
    free = subtract(offered, [span for _, span in held])
    found: list[Interval] = []
    for f_start, f_end in free:
        first = max(f_start, earliest)
        first += -first % step
        last = f_end - length
        if latest is not None:
            last = min(last, latest - length)
        if first > last:
            continue
        # in this free interval, the start nearest to the requested one
        target = min(max(request.start_ms, first), last)
        target -= (target - first) % step
        found.append((target, target + length))
    found.sort(key=lambda slot: abs(slot[0] - request.start_ms))
    return tuple(found[:ALTERNATIVES])
