"""``/health`` and the gauges of ``/metrics``: read from the parts that own the figures.

Each collector reports its own part (``Collector.health_report``, ``Collector.gauges``); the
outbox to InfluxDB and the store are the gateway's own parts. The gateway is healthy when
every part is.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any, Protocol

from pilotline.gateway.api.metrics import Gauges, MachineGauge, Metrics
from pilotline.gateway.clock import Clock
from pilotline.gateway.service.collectors import Collector
from pilotline.gateway.sinks.influx.drain import OutboxDrainer
from pilotline.gateway.sinks.influx.points import PRIORITY_EVENT, PRIORITY_TELEMETRY
from pilotline.gateway.store import Store
from pilotline.rules import MachineView

DROPPING_UNHEALTHY_MS = 60_000
"""/health's influx part stays unhealthy this long after the outbox limit dropped a line."""
CLOCK_AHEAD_REPORTED_S = 300
"""/health's clocks part names a source in ``why`` this long after its last future sample."""


class HealthPart(Protocol):
    """A part of ``/health`` besides the collectors (the interlock): its name and report."""

    name: str

    def health_report(self, now_ms: int) -> dict[str, Any]: ...


class Health:
    def __init__(
        self,
        *,
        collectors: Sequence[Collector],
        drainer: OutboxDrainer | None,
        store: Store,
        store_path: Path,
        clock_ms: Clock,
        started_ms: int,
        metrics: Metrics,
        views: Callable[[], list[MachineView]],
        parts: Sequence[HealthPart] = (),
    ) -> None:
        self._collectors = collectors
        self._drainer = drainer
        self._store = store
        self._store_path = store_path
        self._clock_ms = clock_ms
        self._started_ms = started_ms
        self._metrics = metrics
        self._views = views
        self._parts = parts

    def report(self) -> dict[str, Any]:
        """The ``/health`` document: ``healthy``, ``uptime_s``, then one part per collector,
        ``influx`` (with an outbox) and ``store``, each with ``healthy`` and ``why``."""
        now = self._clock_ms()
        parts: dict[str, Any] = {}
        for collector in self._collectors:
            parts[collector.name] = collector.health_report(now)
        if self._drainer is not None:
            parts["influx"] = self._influx(self._drainer, now)
        parts["store"] = {"healthy": True, "why": None, "path": str(self._store_path)}
        parts["clocks"] = self._clocks(now)
        for part in self._parts:
            parts[part.name] = part.health_report(now)
        healthy = all(part["healthy"] for part in parts.values())
        return {"healthy": healthy, "uptime_s": round((now - self._started_ms) / 1000, 1), **parts}

    def _clocks(self, now: int) -> dict[str, Any]:
        """Sources whose clock is wrong, by machine. A wrong source does not make the gateway
        unhealthy (its samples are refused or applied late, the others are unaffected), but
        ``why`` names it while it keeps happening."""
        m = self._metrics
        ahead = {
            machine: {
                "refused": n,
                "ahead_s": round(m.ahead[machine][0] / 1000, 3),
                "last_s_ago": round((now - m.ahead[machine][1]) / 1000, 1),
            }
            for machine, n in sorted(m.future.items())
        }
        behind = {v.id: round(v.lag_ms / 1000, 3) for v in self._views() if v.lag_ms > 0}
        recent = [
            f"{machine} stamps {a['ahead_s']} s ahead ({a['refused']} refused as future)"
            for machine, a in ahead.items()
            if a["last_s_ago"] < CLOCK_AHEAD_REPORTED_S
        ]
        return {
            "healthy": True,
            "why": "; ".join(recent) or None,
            "ahead": ahead,
            "behind_s": behind,
            "late": dict(sorted(m.late.items())),
        }

    def _influx(self, drainer: OutboxDrainer, now: int) -> dict[str, Any]:
        store = self._store
        s = drainer.stats()
        oldest = store.outbox_oldest_ms()
        why = None if s.healthy else f"writes failing: {s.last_error}"
        drop = store.last_drop
        if drop is not None and now - drop.at_ms < DROPPING_UNHEALTHY_MS:
            dropped = store.outbox_dropped
            full = (
                f"outbox full ({store.outbox_max_points} points or"
                f" {store.outbox_max_bytes} bytes): dropping"
                f" (since start {dropped.get(PRIORITY_TELEMETRY, 0)} telemetry,"
                f" {dropped.get(PRIORITY_EVENT, 0)} events;"
                f" last {round((now - drop.at_ms) / 1000, 1)} s ago)"
            )
            why = full if why is None else f"{why}; {full}"
        return {
            "healthy": why is None,
            "why": why,
            "written": s.written,
            "retries": s.retries,
            "outbox_depth": store.outbox_depth(),
            "outbox_max_points": store.outbox_max_points,
            "outbox_bytes": store.outbox_bytes(),
            "outbox_max_bytes": store.outbox_max_bytes,
            "outbox_dropped": {str(p): n for p, n in sorted(store.outbox_dropped.items())},
            "oldest_unsent_s": None if oldest is None else round((now - oldest) / 1000, 1),
        }

    def gauges(self) -> Gauges:
        """What ``/metrics`` reads at scrape time."""
        store, drainer, collectors = self._store, self._drainer, self._collectors

        def collector_gauges() -> list[tuple[str, bool, int, int, int, dict[str, int]]]:
            return [(c.name, *c.gauges()) for c in collectors]

        def oldest_age() -> float:
            oldest = store.outbox_oldest_ms()
            return 0.0 if oldest is None else max(0.0, (self._clock_ms() - oldest) / 1000)

        def machines() -> list[MachineGauge]:
            now = self._clock_ms()
            return [
                MachineGauge(
                    v.id,
                    v.zone,
                    v.state.code,
                    v.lag_ms / 1000,
                    # a stamp up to max_skew_s ahead is accepted: no negative age
                    None if v.last_seen_ms is None else max(0.0, (now - v.last_seen_ms) / 1000),
                )
                for v in self._views()
            ]

        return Gauges(
            outbox_depth=store.outbox_depth,
            outbox_oldest_age_s=oldest_age,
            points_written=lambda: drainer.stats().written if drainer else 0,
            write_retries=lambda: drainer.stats().retries if drainer else 0,
            write_errors=lambda: drainer.stats().errors if drainer else 0,
            collectors=collector_gauges,
            outbox_dropped=lambda: dict(store.outbox_dropped),
            outbox_bytes=store.outbox_bytes,
            outbox_max_points=store.outbox_max_points,
            outbox_max_bytes=store.outbox_max_bytes,
            machines=machines,
        )
