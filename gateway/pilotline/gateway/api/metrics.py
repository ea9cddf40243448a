"""Counters for /metrics, kept as plain ints on the hot path and exposed on scrape.

prometheus_client's labelled ``Counter.inc()`` costs many times a dict increment (measured:
benchmarks/README.md). The gateway counts in ``Metrics`` and a custom collector turns the counts
into metric families only when Prometheus asks.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from prometheus_client.core import CounterMetricFamily, GaugeMetricFamily, Metric
from prometheus_client.registry import Collector, CollectorRegistry


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


@dataclass(frozen=True)
class Gauges:
    """Values read at scrape time from the parts that own them."""

    outbox_depth: Callable[[], int]
    outbox_oldest_age_s: Callable[[], float]
    points_written: Callable[[], int]
    write_retries: Callable[[], int]
    write_errors: Callable[[], int]
    # (name, connected, reconnects, values received with a Bad status, messages received)
    collectors: Callable[[], list[tuple[str, bool, int, int, int]]]
    # outbox lines dropped by its size limit, by priority (0 events, 1 telemetry)
    outbox_dropped: Callable[[], dict[int, int]] = dict
    # how far each machine's data runs behind the gateway's clock, in ms (Plant.view().lag_ms)
    lags: Callable[[], dict[str, int]] = dict


class GatewayCollector(Collector):
    def __init__(self, metrics: Metrics, gauges: Gauges) -> None:
        self._m = metrics
        self._g = gauges

    def collect(self) -> Iterator[Metric]:
        m, g = self._m, self._g
        samples = CounterMetricFamily(
            "pilotline_samples", "Samples received, by machine", labels=["machine"]
        )
        for machine, n in sorted(m.samples.items()):
            samples.add_metric([machine], n)
        yield samples
        rejected = CounterMetricFamily(
            "pilotline_rejected",
            "Inputs rejected and quarantined, by source and reason",
            labels=["source", "reason"],
        )
        for (source, reason), n in sorted(m.rejected.items()):
            rejected.add_metric([source, reason], n)
        yield rejected
        events = CounterMetricFamily(
            "pilotline_rule_events", "Events emitted by the rules core, by kind", labels=["kind"]
        )
        for kind, n in sorted(m.events.items()):
            events.add_metric([kind], n)
        yield events
        auth = CounterMetricFamily(
            "pilotline_auth_failures",
            "API requests refused: missing, malformed, unknown, revoked token, forbidden role "
            "or a Host the API does not answer to",
            labels=["reason"],
        )
        for reason, n in sorted(m.auth_failures.items()):
            auth.add_metric([reason], n)
        yield auth
        closed = CounterMetricFamily(
            "pilotline_api_connections_closed",
            "API connections closed by its limits: per_client, evicted, full, request_timeout",
            labels=["reason"],
        )
        for reason, n in sorted(m.api_connections_closed.items()):
            closed.add_metric([reason], n)
        yield closed
        notifications = CounterMetricFamily(
            "pilotline_notifications",
            "Alert notification attempts, by channel and outcome (sent, failed: retried)",
            labels=["channel", "outcome"],
        )
        for (channel, outcome), n in sorted(m.notifications.items()):
            notifications.add_metric([channel, outcome], n)
        yield notifications
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
        for name, is_connected, n, bad_values, got in g.collectors():
            connected.add_metric([name], int(is_connected))
            reconnects.add_metric([name], n)
            bad.add_metric([name], bad_values)
            received.add_metric([name], got)
        yield connected
        yield reconnects
        yield bad
        yield received
        yield from _clocks(m, g)


def _clocks(m: Metrics, g: Gauges) -> Iterator[Metric]:
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
    late = CounterMetricFamily(
        "pilotline_samples_late",
        "Samples older than what their machine had decided, applied at that decision",
        labels=["machine"],
    )
    for machine, n in sorted(m.late.items()):
        late.add_metric([machine], n)
    yield late
    behind = GaugeMetricFamily(
        "pilotline_source_behind_seconds",
        "How far a machine's data runs behind the gateway clock (0 when live)",
        labels=["machine"],
    )
    for machine, lag in sorted(g.lags().items()):
        behind.add_metric([machine], lag / 1000)
    yield behind


def registry(metrics: Metrics, gauges: Gauges) -> CollectorRegistry:
    reg = CollectorRegistry(auto_describe=False)
    reg.register(GatewayCollector(metrics, gauges))
    return reg
