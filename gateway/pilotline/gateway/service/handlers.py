"""What happens to the rules core's events: an ordered list of small handlers.

Each handler has one job (record the events, count them, mark checkpoints, log, quarantine
rejections, write points, feed the alert rules) and is called with every batch of events in
turn, in the order ``event_handlers`` lists them, with the batch the next commit makes
durable. ``AlertOutput`` does the same for what the alert cores emit, once per commit
and per timer turn rather than per event.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence

import structlog

from pilotline.gateway.api.metrics import Metrics
from pilotline.gateway.clock import Clock
from pilotline.gateway.notify import notification_rows
from pilotline.gateway.notify.alerting import Alerting
from pilotline.gateway.service.staged import Staged
from pilotline.gateway.sinks.influx.points import alert_rows, event_rows
from pilotline.gateway.store import QuarantineRow
from pilotline.rules import Event, IdleWindowClosed, SampleLate, SampleRejected, StateChanged

log = structlog.get_logger("pilotline.gateway")

EventHandler = Callable[[Sequence[Event], Staged], None]
"""One job done on a batch of events, staging what it produces into the batch given."""


def record(events: Sequence[Event], staged: Staged) -> None:
    """The events themselves go to the store (state history, windows, capacity)."""
    staged.events.extend(events)


class CountEvents:
    """``pilotline_rule_events_total{kind}``."""

    def __init__(self, metrics: Metrics) -> None:
        self._counts = metrics.events

    def __call__(self, events: Sequence[Event], staged: Staged) -> None:
        counts = self._counts
        for event in events:
            counts[type(event).__name__] += 1


def mark_checkpoints(events: Sequence[Event], staged: Staged) -> None:
    """A machine the timer moved (no sample of its own) still gets its checkpoint kept."""
    for event in events:
        if isinstance(event, StateChanged | IdleWindowClosed):
            staged.touched.add(event.machine)


class LogEvents:
    """``machine.state_changed`` for every change; ``rules.sample_late`` for the first late
    sample of each machine (counted per machine); ``rules.sample_rejected`` for the first
    rejection of each reason (counted in /metrics and kept in quarantine after that). Runs
    before ``Quarantine``, which counts: a reason is first when it has no count yet."""

    def __init__(self, metrics: Metrics) -> None:
        self._rejected = metrics.rejected
        self._late = metrics.late

    def __call__(self, events: Sequence[Event], staged: Staged) -> None:
        logged: set[str] = set()  # reasons logged from this batch, not yet counted
        for event in events:
            if isinstance(event, SampleLate):
                if not self._late[event.machine]:
                    log.warning(
                        "rules.sample_late",
                        machine=event.machine,
                        ts_ms=event.ts_ms,
                        applied_ms=event.applied_ms,
                        note="older than what the machine had decided: applied at that"
                        " decision; logged once per machine, counted in /metrics",
                    )
                self._late[event.machine] += 1
            elif isinstance(event, SampleRejected):
                if event.reason not in logged and not self._rejected[("rules", event.reason)]:
                    logged.add(event.reason)
                    log.warning(
                        "rules.sample_rejected",
                        machine=event.machine,
                        reason=event.reason,
                        detail=event.detail,
                        note="logged once per reason; see /metrics and /api/quarantine",
                    )
            elif isinstance(event, StateChanged):
                log.info(
                    "machine.state_changed",
                    machine=event.machine,
                    zone=event.zone,
                    state=event.state.value,
                    previous=event.previous.value,
                    at_ms=event.ts_ms,
                )


class Quarantine:
    """A sample the rules refused is counted and kept, with why, in the quarantine table."""

    def __init__(self, metrics: Metrics, clock_ms: Clock) -> None:
        self._rejected = metrics.rejected
        self._clock_ms = clock_ms

    def __call__(self, events: Sequence[Event], staged: Staged) -> None:
        now: int | None = None
        for event in events:
            if isinstance(event, SampleRejected):
                if now is None:
                    now = self._clock_ms()
                self._rejected[("rules", event.reason)] += 1
                staged.quarantined.append(
                    QuarantineRow(
                        now, "rules", "", event.machine, event.reason, event.detail.encode()
                    )
                )


class Points:
    """The events as points for InfluxDB (only when the site has an outbox)."""

    def __init__(self, site: str, shard_tag: str) -> None:
        self._site = site
        self._shard_tag = shard_tag

    def __call__(self, events: Sequence[Event], staged: Staged) -> None:
        staged.lines.extend(event_rows(self._site, events, self._shard_tag))


class FeedAlerts:
    """The alert rules watch the plant's events (states, windows, rejections)."""

    def __init__(self, alerting: Alerting) -> None:
        self._alerting = alerting

    def __call__(self, events: Sequence[Event], staged: Staged) -> None:
        self._alerting.observe(events)


def event_handlers(
    metrics: Metrics,
    alerting: Alerting,
    clock_ms: Clock,
    *,
    site: str,
    shard_tag: str,
    points: bool,
) -> list[EventHandler]:
    """The gateway's handlers, in the order they run."""
    handlers: list[EventHandler] = [
        record,
        CountEvents(metrics),
        mark_checkpoints,
        LogEvents(metrics),
        Quarantine(metrics, clock_ms),
    ]
    if points:
        handlers.append(Points(site, shard_tag))
    handlers.append(FeedAlerts(alerting))
    return handlers


class EventPipeline:
    """Runs every handler, in order, on each batch of events. ``adjust`` first rewrites the
    batch for all of them (booking-aware capacity: service/reserved.py)."""

    def __init__(
        self,
        handlers: Sequence[EventHandler],
        staged: Staged,
        adjust: Callable[[Sequence[Event]], Sequence[Event]] | None = None,
    ) -> None:
        self.handlers = tuple(handlers)
        self._staged = staged
        self._adjust = adjust

    def __call__(self, events: Sequence[Event]) -> None:
        if not events:
            return
        if self._adjust is not None:
            events = self._adjust(events)
        staged = self._staged
        for handler in self.handlers:
            handler(events, staged)


class AlertOutput:
    """The alert cores' transitions become ``alert`` points, and the dispatcher's
    notifications rows of the notification queue, in the same commit as the checkpoint that
    records them."""

    def __init__(
        self,
        alerting: Alerting,
        staged: Staged,
        metrics: Metrics,
        *,
        site: str,
        points: bool,
    ) -> None:
        self._alerting = alerting
        self._staged = staged
        self._metrics = metrics
        self._site = site
        self._points = points

    def __call__(self) -> bool:
        """Stage what the cores emitted since the last call; True if there was any."""
        transitions, notifications = self._alerting.drain()
        staged = self._staged
        if notifications:
            for n in notifications:
                log.info(
                    "alert.notification",
                    channel=n.channel,
                    kind=n.kind,
                    group=dict(n.group),
                    alerts=len(n.alerts),
                    at_ms=n.ts_ms,
                )
            staged.notifications.extend(notification_rows(self._site, notifications))
            staged.alert_state = True
        if not transitions:
            return bool(notifications)
        for t in transitions:
            self._metrics.events["AlertTransition"] += 1
            log.info(
                "alert.transition",
                rule=t.rule,
                machine=t.machine,
                zone=t.zone,
                severity=t.severity,
                firing=t.firing,
                value=t.value,
                message=t.message,
                at_ms=t.ts_ms,
            )
        if self._points:
            staged.lines.extend(alert_rows(self._site, transitions))
        staged.alert_state = True
        return True
