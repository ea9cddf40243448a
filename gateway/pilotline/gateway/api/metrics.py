"""Counters for /metrics, kept as plain ints on the hot path and exposed on scrape.

prometheus_client's labelled ``Counter.inc()`` costs many times a dict increment (measured:
benchmarks/README.md). The gateway counts in ``Metrics`` and a custom collector turns the counts
into metric families only when Prometheus asks; what other parts own (the outbox, the
collectors, the machines' states) is read from them at scrape time (``Gauges``). Every family
is listed with its type and labels in docs/metrics.md (tests/gateway/test_metrics_exposition.py).
"""

from __future__ import annotations

import asyncio
import bisect
import platform
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field, fields
from typing import Any, NamedTuple

from prometheus_client import PlatformCollector, ProcessCollector, generate_latest
from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    Metric,
)
from prometheus_client.registry import Collector, CollectorRegistry

from pilotline.gateway import __version__

API_DURATION_BUCKETS = (0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0)
"""Upper bounds (seconds) of ``pilotline_api_request_duration_seconds``: an answer from memory
takes a millisecond or two, a history query over SQLite tens to hundreds."""


@dataclass
class Histogram:
    """A labelled histogram kept as plain counts: ``observe`` is a bisect and two additions
    (a prometheus_client ``Histogram.labels().observe()`` costs several times that)."""

    bounds: tuple[float, ...]
    # labels -> observations per bucket (not cumulative; the last one is +Inf), then their sum
    series: dict[tuple[str, ...], list[float]] = field(default_factory=dict)

    def observe(self, labels: tuple[str, ...], value: float) -> None:
        row = self.series.get(labels)
        if row is None:
            row = self.series[labels] = [0.0] * (len(self.bounds) + 2)
        row[bisect.bisect_left(self.bounds, value)] += 1  # le: a value on a bound counts in it
        row[-1] += value

    def copy(self) -> Histogram:
        return Histogram(self.bounds, {key: list(row) for key, row in self.series.items()})

    def family(self, name: str, documentation: str, labels: list[str]) -> HistogramMetricFamily:
        histogram = HistogramMetricFamily(name, documentation, labels=labels)
        bounds = [str(b) for b in self.bounds] + ["+Inf"]  # as Python prints them: "0.005", "1.0"
        for key, row in sorted(self.series.items()):
            cumulative, buckets = 0.0, []
            for bound, n in zip(bounds, row[:-1], strict=True):
                cumulative += n
                buckets.append((bound, cumulative))
            histogram.add_metric(list(key), buckets, sum_value=row[-1])
        return histogram


class MachineGauge(NamedTuple):
    """One machine's figures at scrape time (read from ``Plant.view()``)."""

    machine: str
    zone: str
    state_code: int  # State.code: the ``state_code`` of the time-series contract
    behind_s: float  # how far its data runs behind the gateway's clock
    last_seen_age_s: float | None  # since the stamp of its latest sample (None: none yet)


@dataclass
class Metrics:
    samples: Counter[str] = field(default_factory=Counter)  # by machine
    rejected: Counter[tuple[str, str]] = field(default_factory=Counter)  # (source, reason)
    events: Counter[str] = field(default_factory=Counter)  # by event kind
    commits: int = 0
    acked: int = 0
    auth_failures: Counter[str] = field(default_factory=Counter)  # API refusals, by reason
    # API connections closed by its limits, by reason (api/connections.py)
    api_connections_closed: Counter[str] = field(default_factory=Counter)
    # alert notifications, by (channel, "sent" | "failed"); a failed attempt is retried
    notifications: Counter[tuple[str, str]] = field(default_factory=Counter)
    # sources whose clock runs ahead: samples refused as `future`, and the latest one's
    # (milliseconds ahead, wall clock when refused), by machine
    future: Counter[str] = field(default_factory=Counter)
    ahead: dict[str, tuple[int, int]] = field(default_factory=dict)
    # samples older than their machine's latest decision, applied at it (SampleLate)
    late: Counter[str] = field(default_factory=Counter)
    # the soft interlock (service/interlock.py): signal changes by machine, and OPC UA
    # faults by (machine, "write_failed" | "readback_mismatch"), each attempt counted
    interlock_changes: Counter[str] = field(default_factory=Counter)
    interlock_faults: Counter[tuple[str, str]] = field(default_factory=Counter)
    # API request durations, by (route template, method, status): api/timing.py
    api_durations: Histogram = field(default_factory=lambda: Histogram(API_DURATION_BUCKETS))

    def copy(self) -> Metrics:
        """The counts now, in containers of their own (which a thread may read)."""
        return Metrics(**{f.name: _copied(getattr(self, f.name)) for f in fields(self)})


def _copied(value: Any) -> Any:
    return value.copy() if isinstance(value, dict | Histogram) else value


def _giving(value: Any) -> Callable[[], Any]:
    return lambda: value


@dataclass(frozen=True)
class Gauges:
    """Values read at scrape time from the parts that own them."""

    outbox_depth: Callable[[], int]
    outbox_oldest_age_s: Callable[[], float]
    points_written: Callable[[], int]
    write_retries: Callable[[], int]
    write_errors: Callable[[], int]
    # (name, connected, reconnects, values received with a Bad status, messages received,
    # signals dropped beyond mqtt.max_signals by machine)
    collectors: Callable[[], list[tuple[str, bool, int, int, int, dict[str, int]]]]
    # outbox lines dropped by its size limit, by priority (0 events, 1 telemetry)
    outbox_dropped: Callable[[], dict[int, int]] = dict
    outbox_bytes: Callable[[], int] = int
    outbox_max_points: int | None = None  # None: no limit
    outbox_max_bytes: int | None = None
    # each machine's state, lag and last-seen age (Plant.view(), read once per scrape)
    machines: Callable[[], list[MachineGauge]] = list

    def read(self) -> Gauges:
        """Every figure read now, as gauges that give it back (each call of the live ones
        returns a container of its own: a thread may read them)."""
        now: dict[str, Any] = {}
        for f in fields(self):
            value = getattr(self, f.name)
            now[f.name] = _giving(value()) if callable(value) else value
        return Gauges(**now)


class GatewayCollector(Collector):
    def __init__(self, metrics: Metrics, gauges: Gauges) -> None:
        self._m = metrics
        self._g = gauges

    def snapshot(self) -> GatewayCollector:
        """This collector over the figures as they are now."""
        return GatewayCollector(self._m.copy(), self._g.read())

    def collect(self) -> Iterator[Metric]:
        m, g = self._m, self._g
        build = GaugeMetricFamily(
            "pilotline_build_info",
            "The running gateway: its version and Python's (always 1)",
            labels=["version", "python"],
        )
        build.add_metric([__version__, platform.python_version()], 1)
        yield build
        yield _counted("pilotline_samples", "Samples received, by machine", ["machine"], m.samples)
        yield _counted(
            "pilotline_rejected",
            "Inputs rejected and quarantined, by source and reason",
            ["source", "reason"],
            m.rejected,
        )
        yield _counted(
            "pilotline_rule_events", "Events emitted by the rules core, by kind", ["kind"], m.events
        )
        yield _counted(
            "pilotline_auth_failures",
            "API requests refused: missing, malformed, unknown, revoked token, forbidden role "
            "or a Host the API does not answer to",
            ["reason"],
            m.auth_failures,
        )
        yield _counted(
            "pilotline_api_connections_closed",
            "API connections closed by its limits: per_client, evicted, full, request_timeout",
            ["reason"],
            m.api_connections_closed,
        )
        yield _counted(
            "pilotline_notifications",
            "Alert notification attempts, by channel and outcome (sent, failed: retried)",
            ["channel", "outcome"],
            m.notifications,
        )
        yield _counted(
            "pilotline_interlock_changes",
            "Interlock signals that changed (a new seq), by machine",
            ["machine"],
            m.interlock_changes,
        )
        yield _counted(
            "pilotline_interlock_faults",
            "Interlock OPC UA writes that failed or did not read back, by machine and kind "
            "(write_failed, readback_mismatch); each attempt counts",
            ["machine", "kind"],
            m.interlock_faults,
        )
        yield CounterMetricFamily(
            "pilotline_points_written", "Points acknowledged by InfluxDB", value=g.points_written()
        )
        yield CounterMetricFamily(
            "pilotline_write_retries", "InfluxDB write attempts retried", value=g.write_retries()
        )
        yield CounterMetricFamily(
            "pilotline_write_errors", "InfluxDB batches refused for good", value=g.write_errors()
        )
        yield CounterMetricFamily(
            "pilotline_store_commits", "Durable commits of the embedded store", value=m.commits
        )
        yield GaugeMetricFamily(
            "pilotline_outbox_depth", "Points waiting in the durable outbox", value=g.outbox_depth()
        )
        yield GaugeMetricFamily(
            "pilotline_outbox_oldest_age_seconds",
            "Age of the oldest point waiting in the outbox",
            value=g.outbox_oldest_age_s(),
        )
        yield GaugeMetricFamily(
            "pilotline_outbox_bytes",
            "Bytes of line protocol waiting in the outbox",
            value=g.outbox_bytes(),
        )
        max_points = GaugeMetricFamily(
            "pilotline_outbox_max_points",
            "The outbox's limit in lines (influx.outbox_max_points); absent: none",
        )
        max_bytes = GaugeMetricFamily(
            "pilotline_outbox_max_bytes",
            "The outbox's limit in bytes (influx.outbox_max_bytes); absent: none",
        )
        if g.outbox_max_points is not None:
            max_points.add_metric([], g.outbox_max_points)
        if g.outbox_max_bytes is not None:
            max_bytes.add_metric([], g.outbox_max_bytes)
        yield max_points
        yield max_bytes
        dropped = CounterMetricFamily(
            "pilotline_outbox_dropped",
            "Outbox lines dropped by its size limit, by priority (0 events, 1 telemetry)",
            labels=["priority"],
        )
        for priority, n in sorted({0: 0, 1: 0, **g.outbox_dropped()}.items()):
            dropped.add_metric([str(priority)], n)
        yield dropped
        connected = GaugeMetricFamily(
            "pilotline_collector_connected",
            "1 when the collector is connected",
            labels=["collector"],
        )
        reconnects = CounterMetricFamily(
            "pilotline_collector_reconnects", "Connections lost and re-made", labels=["collector"]
        )
        bad = CounterMetricFamily(
            "pilotline_collector_bad_values",
            "Values received with a Bad status (never drive a state)",
            labels=["collector"],
        )
        received = CounterMetricFamily(
            "pilotline_collector_received",
            "Messages (MQTT) or data-change notifications (OPC UA) received",
            labels=["collector"],
        )
        signals_dropped: Counter[str] = Counter()
        for name, is_connected, n, bad_values, got, dropped_keys in g.collectors():
            connected.add_metric([name], int(is_connected))
            reconnects.add_metric([name], n)
            bad.add_metric([name], bad_values)
            received.add_metric([name], got)
            signals_dropped.update(dropped_keys)
        yield connected
        yield reconnects
        yield bad
        yield received
        yield _counted(
            "pilotline_signals_dropped",
            "Signals (payload keys) dropped beyond mqtt.max_signals, by machine",
            ["machine"],
            signals_dropped,
        )
        yield m.api_durations.family(
            "pilotline_api_request_duration_seconds",
            "API requests, by route template, method and status: time to the answer's end",
            ["route", "method", "status"],
        )
        machines = g.machines()
        yield from _machines(machines)
        yield from _clocks(m, machines)


def _counted(
    name: str, documentation: str, labels: list[str], counts: Mapping[Any, int]
) -> CounterMetricFamily:
    """A counter family from counts keyed by its one label's value, or by a tuple of values
    (one per label), in sorted order."""
    family = CounterMetricFamily(name, documentation, labels=labels)
    for key, n in sorted(counts.items()):
        family.add_metric(list(key) if isinstance(key, tuple) else [key], n)
    return family


def _machines(machines: list[MachineGauge]) -> Iterator[Metric]:
    """Each machine's state and how fresh its data is, from the plant's view at scrape time."""
    state = GaugeMetricFamily(
        "pilotline_machine_state_code",
        "Each machine's state as its state_code: 0 offline, 1 running, 2 idle, 3 down, "
        "4 maintenance",
        labels=["machine", "zone"],
    )
    age = GaugeMetricFamily(
        "pilotline_machine_last_seen_age_seconds",
        "Time since the stamp of each machine's latest sample (absent before its first)",
        labels=["machine"],
    )
    for g in machines:
        state.add_metric([g.machine, g.zone], g.state_code)
        if g.last_seen_age_s is not None:
            age.add_metric([g.machine], g.last_seen_age_s)
    yield state
    yield age


def _clocks(m: Metrics, machines: list[MachineGauge]) -> Iterator[Metric]:
    """Sources whose clock is wrong: ahead (samples refused as `future`), behind (data older
    than the gateway's clock), or late (applied at an earlier decision)."""
    future = CounterMetricFamily(
        "pilotline_samples_future",
        "Samples refused as stamped further ahead of the gateway clock than max_skew_s",
        labels=["machine"],
    )
    ahead = GaugeMetricFamily(
        "pilotline_source_ahead_seconds",
        "How far ahead of the gateway clock the latest refused sample was stamped",
        labels=["machine"],
    )
    for machine, n in sorted(m.future.items()):
        future.add_metric([machine], n)
        ahead.add_metric([machine], m.ahead[machine][0] / 1000)
    yield future
    yield ahead
    yield _counted(
        "pilotline_samples_late",
        "Samples older than what their machine had decided, applied at that decision",
        ["machine"],
        m.late,
    )
    behind = GaugeMetricFamily(
        "pilotline_source_behind_seconds",
        "How far a machine's data runs behind the gateway clock (0 when live)",
        labels=["machine"],
    )
    for g in sorted(machines):
        behind.add_metric([g.machine], g.behind_s)
    yield behind


def registry(metrics: Metrics, gauges: Gauges) -> CollectorRegistry:
    """The gateway's own registry (never prometheus_client's global one): its figures, and the
    process's (memory, CPU, open files; Linux) and Python's, as every Prometheus client has."""
    return _registry(GatewayCollector(metrics, gauges))


_PROCESS = ProcessCollector(registry=None)  # reads /proc/self at each collect
_PLATFORM = PlatformCollector(registry=None)  # fixed at start


def _registry(collector: GatewayCollector) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    for part in (collector, _PROCESS, _PLATFORM):
        reg.register(part)
    return reg


async def exposition(metrics: Metrics, gauges: Gauges) -> bytes:
    """The text of ``/metrics``. The figures are read in the loop that owns them, the text is
    written in a thread: at 10,000 machines writing it takes 200-300 ms (prometheus_client
    formats some 5 µs a sample), which would stall the loop, and so every sample, as long."""
    snapshot = GatewayCollector(metrics, gauges).snapshot()
    return await asyncio.to_thread(generate_latest, _registry(snapshot))
