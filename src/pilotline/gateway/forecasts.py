"""Hourly capacity forecasts: the pure ``rules.forecast`` fed from the embedded store.

Every hour (and at start) the gateway recomputes, per machine, the expected offered free
minutes for each of the next 48 hours, keeps them for ``/api/forecast`` and writes them as
the ``capacity_forecast`` measurement (tags site, zone, machine; fields
``expected_free_min``, ``offered_min``; stamped at the start of each forecast hour). A
later forecast of the same hour overwrites the earlier point (same series and time).
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING

import structlog

from pilotline.gateway.lineproto import line
from pilotline.gateway.points import PRIORITY_EVENT
from pilotline.rules.forecast import HOUR_MS, WEEK_MS, HourForecast, forecast

if TYPE_CHECKING:
    from pilotline.gateway.service import Gateway

log = structlog.get_logger("pilotline.gateway.forecasts")

WEEKS = 4
HOURS = 48
CAPACITY_FORECAST = "capacity_forecast"


def machine_forecasts(gateway: Gateway, now_ms: int) -> dict[str, list[HourForecast]]:
    since = now_ms - WEEKS * WEEK_MS - HOUR_MS
    out: dict[str, list[HourForecast]] = {}
    for spec in gateway.plant_spec.machines:
        rows = gateway.store.windows(since, machine=spec.id, limit=100_000)
        windows = [(r["start_ms"], r["end_ms"] or now_ms) for r in rows]
        # Evidence starts with the first recorded window (the store keeps no older history);
        # a machine with none yet is forecast at zero free minutes.
        first_seen = min((s for s, _ in windows), default=None)
        out[spec.id] = forecast(
            windows,
            spec.policy,
            now_ms,
            min_idle_ms=spec.min_idle_ms,
            first_seen_ms=first_seen,
            weeks=WEEKS,
            hours=HOURS,
        )
    return out


def forecast_lines(site: str, zones: dict[str, str], forecasts: dict[str, list[HourForecast]]) -> (
    list[tuple[int, str]]
):
    return [
        (
            PRIORITY_EVENT,
            line(
                CAPACITY_FORECAST,
                {"site": site, "zone": zones[machine], "machine": machine},
                {"expected_free_min": hour.expected_free_min, "offered_min": hour.offered_min},
                hour.start_ms,
            ),
        )
        for machine, hours in forecasts.items()
        for hour in hours
    ]


async def run_forecasts(gateway: Gateway) -> None:
    """Recompute at start and a second after every hour, then stage the lines."""
    zones = {m.id: m.zone for m in gateway.plant_spec.machines}
    while True:
        now = gateway.clock_ms()
        gateway.forecasts = machine_forecasts(gateway, now)
        if gateway.drainer is not None:
            gateway.stage_lines(forecast_lines(gateway.config.site, zones, gateway.forecasts))
        log.info("forecast.updated", machines=len(gateway.forecasts), hours=HOURS)
        await asyncio.sleep((HOUR_MS - now % HOUR_MS + 1000) / 1000)
