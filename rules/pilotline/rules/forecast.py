"""Forecast of offered free minutes per hour, from a machine's recorded idle windows.

For each of the next ``hours`` hours, the expected free minutes are the machine's *offerable*
idle share in the same hour of the week (local time) over the last ``weeks`` weeks, times the
minutes of that hour its offering policy allows. Offerable idle time is what follows the
first ``min_idle`` of a window (the part that could have been booked). Weeks before the
machine was first seen do not count, so a young history is averaged over what exists.

Pure: windows, policy and ``now`` in, figures out. The gateway feeds it from the embedded
store and writes the ``capacity_forecast`` measurement.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pilotline.rules.policy import OfferingPolicy

HOUR_MS = 3_600_000
WEEK_MS = 7 * 24 * HOUR_MS


@dataclass(frozen=True, slots=True)
class HourForecast:
    start_ms: int
    expected_free_min: float
    offered_min: float
    weeks: int = 0
    """Past weeks whose same hour the figure averages (0: no history, the figure is 0)."""


def overlap_ms(intervals: Sequence[tuple[int, int]], start: int, end: int) -> int:
    """Total length of ``intervals`` (sorted or not) inside [start, end)."""
    return sum(max(0, min(e, end) - max(s, start)) for s, e in intervals)


def offerable(windows: Sequence[tuple[int, int]], min_idle_ms: int) -> list[tuple[int, int]]:
    """The bookable part of each idle window: what follows its first ``min_idle_ms``."""
    return [(s + min_idle_ms, e) for s, e in windows if e - s > min_idle_ms]


def allowed_ms(policy: OfferingPolicy, start: int, end: int) -> int:
    """Milliseconds of [start, end) the policy allows (its minimum window ignored)."""
    total, cursor = 0, start
    while cursor < end:
        span = policy.span(cursor)
        stop = end if span.end_ms is None else min(span.end_ms, end)
        if span.allowed:
            total += stop - cursor
        cursor = stop
    return total


def forecast(
    windows: Sequence[tuple[int, int]],
    policy: OfferingPolicy,
    now_ms: int,
    *,
    min_idle_ms: int,
    first_seen_ms: int | None,
    weeks: int = 4,
    hours: int = 48,
) -> list[HourForecast]:
    """One ``HourForecast`` per hour from the next whole hour, for ``hours`` hours.

    ``windows`` are (start, end) of idle windows, an open one ending at ``now_ms``.
    """
    first = first_hour_ms(now_ms)
    allowed = allowed_minutes(policy, first, hours)
    expected = expected_minutes(
        windows,
        allowed,
        now_ms,
        min_idle_ms=min_idle_ms,
        first_seen_ms=first_seen_ms,
        weeks=weeks,
    )
    return [
        HourForecast(
            first + index * HOUR_MS, free, round(minutes, 2),
            evidence_weeks(first + index * HOUR_MS, now_ms, first_seen_ms, weeks),
        )
        for index, (free, minutes) in enumerate(zip(expected, allowed, strict=True))
    ]


def past_hours(start_ms: int, now_ms: int, first_seen_ms: int, weeks: int) -> list[int]:
    """Starts of the same hour in each of the last ``weeks`` weeks that count as evidence:
    finished by ``now_ms``, and not before the machine was first seen."""
    out = []
    for back in range(1, weeks + 1):
        past = start_ms - back * WEEK_MS
        if past + HOUR_MS > now_ms:
            continue  # that past hour has not finished yet
        if past < first_seen_ms:
            continue  # before the machine was watched: no evidence either way
        out.append(past)
    return out


def evidence_weeks(start_ms: int, now_ms: int, first_seen_ms: int | None, weeks: int = 4) -> int:
    """How many past weeks the forecast of the hour at ``start_ms`` averages: the number of
    ``past_hours``, counted without listing them (the API asks for thousands at a time)."""
    if first_seen_ms is None or start_ms < first_seen_ms:
        return 0
    latest = min(weeks, (start_ms - first_seen_ms) // WEEK_MS)  # not before first seen
    earliest = max(1, -(-(start_ms + HOUR_MS - now_ms) // WEEK_MS))  # finished by now
    return max(0, latest - earliest + 1)


def first_hour_ms(now_ms: int) -> int:
    """Start of the first forecast hour: the next whole hour after ``now_ms``."""
    return now_ms // HOUR_MS * HOUR_MS + HOUR_MS


def allowed_minutes(policy: OfferingPolicy, first_ms: int, hours: int) -> tuple[float, ...]:
    """Minutes of each hour from ``first_ms`` the policy allows (``offered_min`` is this
    rounded to 0.01). The same for every machine with an equal policy: the gateway computes
    it once per policy, not once per machine."""
    return tuple(
        allowed_ms(policy, start, start + HOUR_MS) / 60_000
        for start in range(first_ms, first_ms + hours * HOUR_MS, HOUR_MS)
    )


def expected_minutes(
    windows: Sequence[tuple[int, int]],
    allowed: Sequence[float],
    now_ms: int,
    *,
    min_idle_ms: int,
    first_seen_ms: int | None,
    weeks: int = 4,
) -> tuple[float, ...]:
    """Expected free minutes (rounded to 0.01) of each hour from ``first_hour_ms(now_ms)``,
    given the minutes the policy ``allowed`` in each: the offerable idle share of the same
    hour in past weeks, times those minutes."""
    if first_seen_ms is None or not windows:
        return (0.0,) * len(allowed)  # no evidence: the share is 0 (a machine never idle)
    usable = offerable(windows, min_idle_ms)
    first = first_hour_ms(now_ms)
    out = []
    for index, minutes in enumerate(allowed):
        start = first + index * HOUR_MS
        shares = [
            overlap_ms(usable, past, past + HOUR_MS) / HOUR_MS
            for past in past_hours(start, now_ms, first_seen_ms, weeks)
        ]
        share = sum(shares) / len(shares) if shares else 0.0
        out.append(round(share * minutes, 2))
    return tuple(out)
