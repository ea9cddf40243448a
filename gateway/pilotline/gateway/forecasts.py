"""Hourly capacity forecasts: the pure ``rules.forecast`` fed from the embedded store.

Every hour (and at start) the gateway recomputes, per machine, the expected offered free
minutes for each of the next 48 hours, keeps them for ``/api/forecast`` and writes them as
the ``capacity_forecast`` measurement (tags site, zone, machine; fields
``expected_free_min``, ``offered_min``; stamped at the start of each forecast hour). A
later forecast of the same hour overwrites the earlier point (same series and time), so
after the first run only the hours whose figures changed, and the new last hour, are
written again: with 10,000 machines that is about 10,000 points an hour instead of 480,000.

Footprint (10,000 machines): the forecasts are kept as two tuples of floats per machine,
shared between machines with the same figures (a machine without idle history shares one
tuple of zeros; machines with equal policies share their offered minutes), not as 48
objects per machine; and the work is done in chunks of ``CHUNK`` machines with the event
loop free in between, so the first run neither holds up the MQTT subscription nor stages
all its lines at once.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, NamedTuple, Protocol

import structlog

from pilotline.gateway.sinks.influx.lineproto import field_key, format_value, series_key
from pilotline.gateway.sinks.influx.points import PRIORITY_EVENT
from pilotline.rules.forecast import (
    HOUR_MS,
    WEEK_MS,
    HourForecast,
    allowed_minutes,
    evidence_weeks,
    expected_minutes,
    first_hour_ms,
)
from pilotline.rules.policy import OfferingPolicy
from pilotline.rules.spec import MachineSpec, PlantSpec

log = structlog.get_logger("pilotline.gateway.forecasts")

WEEKS = 4
HOURS = 48
CAPACITY_FORECAST = "capacity_forecast"
CHUNK = 100
"""Machines per turn of the event loop (about 5,000 lines on a first run)."""

Figures = tuple[float, ...]


class WindowHistory(Protocol):
    def windows(
        self, since_ms: int, machine: str | None = None, limit: int = 1000
    ) -> list[dict[str, Any]]:
        """Idle windows that started at or after ``since_ms``, or are still open."""
        ...


class Site(Protocol):
    @property
    def site(self) -> str: ...


class ForecastSource(Protocol):
    """What the forecasts read from the gateway, and where they leave their results."""

    forecasts: Forecasts
    """The latest run's forecasts, for ``/api/forecast`` and ``/api/offers``."""

    @property
    def config(self) -> Site: ...
    @property
    def plant_spec(self) -> PlantSpec: ...
    @property
    def store(self) -> WindowHistory: ...
    @property
    def points(self) -> bool:
        """Whether points go to InfluxDB: without, no lines are computed."""
        ...

    def clock_ms(self) -> int: ...
    def stage_lines(self, lines: list[tuple[int, str]]) -> None: ...


class Outlook(NamedTuple):
    """A forecast over a span: the offerable idle share of its hours with history (None:
    none has), the fewest past weeks behind any hour, the hours overlapped, where it ends."""

    idle_share: float | None
    weeks: int
    hours: int
    until_ms: int


class Forecasts(Mapping[str, Sequence[HourForecast]]):
    """Every machine's forecast from one run: machine id -> its ``HourForecast`` per hour.

    Kept compact (see the module docstring); the ``HourForecast`` lists are built when read.
    """

    __slots__ = ("_by_machine", "_first_seen", "first_ms", "now_ms", "weeks")

    def __init__(self, first_ms: int = 0, now_ms: int | None = None, weeks: int = WEEKS) -> None:
        self.first_ms = first_ms
        """Start of the first forecast hour (epoch ms)."""
        self.now_ms = first_ms - 1 if now_ms is None else now_ms
        """When the run was made (its evidence ends there)."""
        self.weeks = weeks
        self._by_machine: dict[str, tuple[Figures, Figures]] = {}
        # when each machine was first seen: how many weeks each hour's figure rests on
        self._first_seen: dict[str, int] = {}

    def set(
        self, machine: str, expected: Figures, offered: Figures, first_seen_ms: int | None = None
    ) -> None:
        self._by_machine[machine] = (expected, offered)
        if first_seen_ms is not None:
            self._first_seen[machine] = first_seen_ms

    def figures(self, machine: str) -> tuple[Figures, Figures] | None:
        """(expected free minutes, offered minutes) per hour, or None for an unknown machine."""
        return self._by_machine.get(machine)

    def __getitem__(self, machine: str) -> list[HourForecast]:
        hours = len(self._by_machine[machine][0])
        return self.hours(machine, self.first_ms, self.first_ms + hours * HOUR_MS)

    def outlook(self, machine: str, start_ms: int, end_ms: int) -> Outlook | None:
        """The forecast over ``[start_ms, end_ms)`` summed up for ``/api/offers``
        (api/forecast_advice.py), or None when no forecast hour overlaps it. Straight from
        the figures: the API asks this for every slot of up to thousands of machines."""
        found = self._by_machine.get(machine)
        if found is None:
            return None
        expected, offered = found
        first = max(0, (start_ms - self.first_ms) // HOUR_MS)
        last = min(len(expected), -(-(end_ms - self.first_ms) // HOUR_MS))
        if last <= first:
            return None
        until = min(end_ms, self.first_ms + last * HOUR_MS)
        seen = self._first_seen.get(machine)
        if seen is None:
            return Outlook(None, 0, last - first, until)  # no history: the common fast case
        weighted = covered = 0.0
        fewest = self.weeks
        for i in range(first, last):
            hour = self.first_ms + i * HOUR_MS
            # evidence_weeks(hour, now, seen), inline: this loop runs ~50,000 times a request
            earliest = max(1, -(-(hour + HOUR_MS - self.now_ms) // WEEK_MS))
            weeks = min(self.weeks, (hour - seen) // WEEK_MS) - earliest + 1 if hour >= seen else 0
            if weeks <= 0:
                fewest = 0
                continue
            fewest = min(fewest, weeks)
            if offered[i] > 0:
                part = min(end_ms, hour + HOUR_MS) - max(start_ms, hour)
                weighted += min(1.0, expected[i] / offered[i]) * part
                covered += part
        return Outlook(weighted / covered if covered else None, fewest, last - first, until)

    def hours(self, machine: str, from_ms: int, to_ms: int) -> list[HourForecast]:
        """The forecast hours of ``machine`` overlapping ``[from_ms, to_ms)`` (none for an
        unknown machine): only those are built, as ``/api/offers`` asks for a few per slot."""
        found = self._by_machine.get(machine)
        if found is None:
            return []
        expected, offered = found
        first = max(0, (from_ms - self.first_ms) // HOUR_MS)
        last = min(len(expected), -(-(to_ms - self.first_ms) // HOUR_MS))
        seen = self._first_seen.get(machine)
        out = []
        for i in range(first, last):
            start = self.first_ms + i * HOUR_MS
            weeks = evidence_weeks(start, self.now_ms, seen, self.weeks)
            out.append(HourForecast(start, expected[i], offered[i], weeks))
        return out

    def __iter__(self) -> Iterator[str]:
        return iter(self._by_machine)

    def __len__(self) -> int:
        return len(self._by_machine)


class _Interned:
    """One object for equal figures within a run: tuples and the floats in them."""

    def __init__(self) -> None:
        self._tuples: dict[Figures, Figures] = {}
        self._floats: dict[float, float] = {}

    def __call__(self, figures: Figures) -> Figures:
        found = self._tuples.get(figures)
        if found is None:
            floats = self._floats
            found = tuple([floats.setdefault(x, x) for x in figures])
            self._tuples[found] = found
        return found


class _Run:
    """One forecast run: per-policy figures computed once, results interned."""

    def __init__(self, now_ms: int, hours: int = HOURS, weeks: int = WEEKS) -> None:
        self.now_ms = now_ms
        self.hours = hours
        self.weeks = weeks
        self.result = Forecasts(first_hour_ms(now_ms), now_ms, weeks)
        self._allowed: dict[OfferingPolicy, tuple[Figures, Figures]] = {}
        self._intern = _Interned()

    def _policy(self, policy: OfferingPolicy) -> tuple[Figures, Figures]:
        """(allowed minutes, offered minutes) per hour for this policy."""
        found = self._allowed.get(policy)
        if found is None:
            allowed = allowed_minutes(policy, self.result.first_ms, self.hours)
            found = (allowed, self._intern(tuple(round(m, 2) for m in allowed)))
            self._allowed[policy] = found
        return found

    def machine(self, spec: MachineSpec, windows: Sequence[tuple[int, int]]) -> None:
        allowed, offered = self._policy(spec.policy)
        # Evidence starts with the first recorded window (the store keeps no older history);
        # a machine with none yet is forecast at zero free minutes.
        first_seen = min((s for s, _ in windows), default=None)
        expected = expected_minutes(
            windows,
            allowed,
            self.now_ms,
            min_idle_ms=spec.min_idle_ms,
            first_seen_ms=first_seen,
            weeks=self.weeks,
        )
        self.result.set(spec.id, self._intern(expected), offered, first_seen)


def _windows(source: ForecastSource, spec: MachineSpec, now_ms: int) -> list[tuple[int, int]]:
    since = now_ms - WEEKS * WEEK_MS - HOUR_MS
    rows = source.store.windows(since, machine=spec.id, limit=100_000)
    return [(r["start_ms"], r["end_ms"] or now_ms) for r in rows]


def forecast_lines(
    site: str,
    zones: Mapping[str, str],
    forecasts: Forecasts,
    previous: Forecasts | None = None,
    machines: Sequence[str] | None = None,
) -> list[tuple[int, str]]:
    """``capacity_forecast`` lines of ``machines`` (default: all), leaving out the hours that
    ``previous`` (the last run's forecasts) already wrote with the same figures."""
    out: list[tuple[int, str]] = []
    bodies: dict[tuple[float, float], str] = {}
    expected_key, offered_key = field_key("expected_free_min"), field_key("offered_min")
    first = forecasts.first_ms
    shift = (first - previous.first_ms) // HOUR_MS if previous is not None else 0
    for machine in forecasts if machines is None else machines:
        figures = forecasts.figures(machine)
        if figures is None:
            continue
        expected, offered = figures
        old = previous.figures(machine) if previous is not None else None
        if shift == 0 and old == figures:
            continue  # the same hours with the same figures: nothing to rewrite
        key: str | None = None
        for i, pair in enumerate(zip(expected, offered, strict=True)):
            j = i + shift
            if old is not None and 0 <= j < len(old[0]) and (old[0][j], old[1][j]) == pair:
                continue
            if key is None:
                tags = {"site": site, "zone": zones[machine], "machine": machine}
                key = series_key(CAPACITY_FORECAST, tags)
            body = bodies.get(pair)
            if body is None:
                free, minutes = pair
                body = f"{expected_key}={format_value(free)},{offered_key}={format_value(minutes)}"
                bodies[pair] = body
            out.append((PRIORITY_EVENT, f"{key} {body} {(first + i * HOUR_MS) * 1_000_000:d}"))
    return out


async def update_forecasts(
    source: ForecastSource, now_ms: int, previous: Forecasts | None, *, chunk: int = CHUNK
) -> tuple[Forecasts, int]:
    """One run: compute ``chunk`` machines at a time, stage their changed lines, and let the
    event loop run in between. Returns the forecasts and the number of lines staged."""
    run = _Run(now_ms)
    specs = source.plant_spec.machines
    zones = {s.id: s.zone for s in specs}
    staged = 0
    for begin in range(0, len(specs), chunk):
        part = specs[begin : begin + chunk]
        for spec in part:
            run.machine(spec, _windows(source, spec, now_ms))
        if source.points:
            lines = forecast_lines(
                source.config.site, zones, run.result, previous, [s.id for s in part]
            )
            if lines:
                source.stage_lines(lines)
                staged += len(lines)
        await asyncio.sleep(0)
    return run.result, staged


async def run_forecasts(source: ForecastSource) -> None:
    """Recompute at start and a second after every hour, staging the lines as it goes."""
    previous: Forecasts | None = None
    while True:
        now = source.clock_ms()
        current, lines = await update_forecasts(source, now, previous)
        source.forecasts = previous = current
        log.info("forecast.updated", machines=len(current), hours=HOURS, lines=lines)
        await asyncio.sleep((HOUR_MS - now % HOUR_MS + 1000) / 1000)
