"""Offering policies: when an owner lets idle time be offered.

A policy is weekly hours in the facility's time zone (``weekdays 18:00-06:00``, ``weekends
all day``) minus blackout periods, plus the smallest window worth offering: idle time is
offered only while the allowed span it falls in still has at least ``min_window_ms`` to run,
so a tenant is never shown a slot that closes before a job could fit.

``NEVER`` offers nothing at any time: what a machine gets when no policy applies to it
(offering fails closed; the configuration says which policy applies, ``gateway/config``).

The policy is pure: it takes epoch milliseconds and answers with epoch milliseconds. Local
times are converted with ``zoneinfo`` one day at a time, so daylight-saving changes land
where the wall clock says (a "18:00" slot starts at 18:00 local on both sides of a change; a
slot across the spring-forward night is an hour shorter, across the autumn one an hour
longer). A local time that does not exist (02:30 on the spring-forward night) is read as
the instant the clock jumps to (fold=0, as zoneinfo resolves it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

DAY_MS = 86_400_000
_HORIZON_DAYS = 9  # a weekly pattern repeats within 7 days; 9 covers spans across midnight


@dataclass(frozen=True, slots=True)
class WeeklySlot:
    """``days`` (0 = Monday) from ``start`` to ``end`` local time; ``end <= start`` runs into
    the next day; ``end=None`` is midnight at the end of the day."""

    days: frozenset[int]
    start: time
    end: time | None = None


@dataclass(frozen=True, slots=True)
class Span:
    """A maximal stretch during which the policy's answer does not change."""

    allowed: bool
    start_ms: int | None  # None: unbounded (as far as the policy can tell)
    end_ms: int | None


@dataclass(frozen=True, slots=True)
class OfferingPolicy:
    tz: tzinfo = UTC
    weekly: tuple[WeeklySlot, ...] = ()  # empty: any time of the week
    blackouts: tuple[tuple[int, int], ...] = ()  # [start, end) in epoch ms
    min_window_ms: int = 0
    never: bool = False  # nothing is ever offered: the weekly hours and blackouts do not matter
    _cache: dict[int, list[tuple[int, int]]] = field(
        default_factory=dict, compare=False, repr=False
    )

    def span(self, ts_ms: int) -> Span:
        """The allowed or refused span that contains ``ts_ms``.

        An edge the policy cannot see within its horizon (about a week) is None.
        """
        if self.never:
            return Span(False, None, None)
        day = ts_ms // DAY_MS
        lo, hi = (day - 2) * DAY_MS, (day + _HORIZON_DAYS) * DAY_MS
        intervals = self._allowed_around(ts_ms)
        previous_end: int | None = None
        for start, end in intervals:
            if ts_ms < start:
                return Span(False, previous_end, start)
            if ts_ms < end:
                return Span(True, None if start <= lo else start, None if end >= hi else end)
            previous_end = end
        return Span(False, previous_end, None)

    def offers(self, ts_ms: int) -> Span:
        """Whether idle time at ``ts_ms`` may be offered, and until when that answer holds.

        Within an allowed span, the last ``min_window_ms`` are not offered.
        """
        span = self.span(ts_ms)
        if not span.allowed or span.end_ms is None or self.min_window_ms <= 0:
            return span
        cutoff = span.end_ms - self.min_window_ms
        if ts_ms < cutoff:
            return Span(True, span.start_ms, cutoff)
        return Span(False, max(cutoff, span.start_ms or cutoff), span.end_ms)

    # -- intervals -------------------------------------------------------------------------

    def _allowed_around(self, ts_ms: int) -> list[tuple[int, int]]:
        """Sorted, merged allowed intervals from a day before ``ts_ms`` to the horizon."""
        day = ts_ms // DAY_MS
        cached = self._cache.get(day)
        if cached is None:
            if len(self._cache) > 64:
                self._cache.clear()
            cached = self._compute(day)
            self._cache[day] = cached
        return cached

    def _compute(self, day: int) -> list[tuple[int, int]]:
        lo = (day - 2) * DAY_MS
        hi = (day + _HORIZON_DAYS) * DAY_MS
        if not self.weekly:
            weekly = [(lo, hi)]
        else:
            first = datetime.fromtimestamp(lo / 1000, tz=self.tz).date() - timedelta(days=1)
            weekly = []
            for offset in range(_HORIZON_DAYS + 4):
                local_day = first + timedelta(days=offset)
                for slot in self.weekly:
                    if local_day.weekday() in slot.days:
                        weekly.append(self._slot_interval(local_day, slot))
        allowed = _subtract(_merge(weekly), _merge(list(self.blackouts)))
        return [(max(s, lo), min(e, hi)) for s, e in allowed if e > lo and s < hi]

    def _slot_interval(self, local_day: date, slot: WeeklySlot) -> tuple[int, int]:
        start = datetime.combine(local_day, slot.start, tzinfo=self.tz)
        if slot.end is None or slot.end <= slot.start:
            end_day = local_day + timedelta(days=1)
            end = datetime.combine(end_day, slot.end or time(0), tzinfo=self.tz)
        else:
            end = datetime.combine(local_day, slot.end, tzinfo=self.tz)
        return _ms(start), _ms(end)


ALWAYS = OfferingPolicy()
NEVER = OfferingPolicy(never=True)


def _ms(moment: datetime) -> int:
    return int(moment.timestamp() * 1000)


def _merge(intervals: list[tuple[int, int]]) -> list[tuple[int, int]]:
    merged: list[tuple[int, int]] = []
    for start, end in sorted(i for i in intervals if i[1] > i[0]):
        if merged and start <= merged[-1][1]:
            merged[-1] = (merged[-1][0], max(merged[-1][1], end))
        else:
            merged.append((start, end))
    return merged


def _subtract(
    intervals: list[tuple[int, int]], holes: list[tuple[int, int]]
) -> list[tuple[int, int]]:
    out: list[tuple[int, int]] = []
    for start, end in intervals:
        cursor = start
        for h_start, h_end in holes:
            if h_end <= cursor or h_start >= end:
                continue
            if h_start > cursor:
                out.append((cursor, h_start))
            cursor = max(cursor, h_end)
            if cursor >= end:
                break
        if cursor < end:
            out.append((cursor, end))
    return out
