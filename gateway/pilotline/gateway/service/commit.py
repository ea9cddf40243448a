"""Commits: what is staged becomes durable in one SQLite transaction, then is acknowledged.

A short batching interval after the first staged item, one transaction makes the telemetry
points, the rules' events, the quarantine rows, the machines' checkpoints, the alert cores'
checkpoints and the notification rows durable together, after which the MQTT messages
behind them are acknowledged to the broker. A gateway killed at any moment therefore loses
nothing: what was not committed was not acknowledged, and the broker delivers it again.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence

import structlog

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.api.metrics import Metrics
from pilotline.gateway.clock import Clock
from pilotline.gateway.notify.alerting import Alerting
from pilotline.gateway.notify.sender import NotificationSender
from pilotline.gateway.service.options import ServiceOptions
from pilotline.gateway.service.staged import Staged
from pilotline.gateway.sinks.influx.drain import OutboxDrainer
from pilotline.gateway.sinks.influx.points import PRIORITY_EVENT, PRIORITY_TELEMETRY
from pilotline.gateway.store import OutboxDrop, Store
from pilotline.rules import Plant

log = structlog.get_logger("pilotline.gateway")


DROP_LOG_INTERVAL_MS = 10_000
"""``outbox.dropped``: one line per burst of drops, and one this often while it lasts."""


class DropLog:
    """``outbox.dropped`` once per burst of drops: when it starts, at most every
    ``DROP_LOG_INTERVAL_MS`` while it lasts, and when it ended (no drop for that long), each
    line with the counts since the previous one."""

    def __init__(self, store: Store, clock_ms: Clock) -> None:
        self._store = store
        self._clock_ms = clock_ms
        self._seen: OutboxDrop | None = None  # the store's last drop, once handled
        self._burst: dict[int, int] = {}  # dropped since the last outbox.dropped line
        self._logged_ms = 0

    def check(self, now_ms: int) -> None:
        drop = self._store.last_drop
        seen = self._seen
        if drop is not None and drop is not seen:
            starts = seen is None or drop.at_ms - seen.at_ms > DROP_LOG_INTERVAL_MS
            if starts and self._burst:
                self._emit("ended", seen)
            self._seen = drop
            for priority, n in drop.dropped.items():
                self._burst[priority] = self._burst.get(priority, 0) + n
            if starts or now_ms - self._logged_ms >= DROP_LOG_INTERVAL_MS:
                self._emit("started" if starts else "continues", drop)
        elif seen is not None and self._burst and now_ms - seen.at_ms > DROP_LOG_INTERVAL_MS:
            self._emit("ended", seen)

    def _emit(self, burst: str, drop: OutboxDrop | None) -> None:
        log.warning(
            "outbox.dropped",
            burst=burst,
            telemetry=self._burst.get(PRIORITY_TELEMETRY, 0),
            events=self._burst.get(PRIORITY_EVENT, 0),
            depth=None if drop is None else drop.depth,
            limit=self._store.outbox_max_points,
            bytes=None if drop is None else drop.bytes,
            max_bytes=self._store.outbox_max_bytes,
            note="outbox full (InfluxDB away too long): raw telemetry is dropped first, oldest"
            " first; counts are since the previous outbox.dropped line",
        )
        self._burst = {}
        self._logged_ms = self._clock_ms()


class Committer:
    acknowledge: Callable[[list[AckToken]], None] | None
    """Sends the acknowledgements of committed messages (the MQTT collector's ``ack``), set
    by the wiring once the collectors exist: they are built on the ingest, which needs this
    committer."""

    def __init__(
        self,
        *,
        staged: Staged,
        store: Store,
        plant: Plant,
        alerting: Alerting,
        stage_alerts: Callable[[], bool],
        metrics: Metrics,
        options: ServiceOptions,
        clock_ms: Clock,
        notifiers: Sequence[NotificationSender],
        drainer: OutboxDrainer | None,
    ) -> None:
        """``stage_alerts()``: stage what the alert cores emitted (``handlers.AlertOutput``)."""
        self._staged = staged
        self._store = store
        self._plant = plant
        self._alerting = alerting
        self._stage_alerts = stage_alerts
        self._metrics = metrics
        self._options = options
        self._clock_ms = clock_ms
        self._notifiers = notifiers
        self._drainer = drainer
        self._drops = DropLog(store, clock_ms)
        self.acknowledge = None
        self._wake = asyncio.Event()
        self._now = asyncio.Event()  # ends the linger early

    def request(self) -> None:
        """Something was staged: commit soon (at once past ``commit_max_items``)."""
        staged = self._staged
        if len(staged) >= self._options.commit_max_items:
            self.commit()
        else:
            if len(staged.acks) >= self._options.commit_eager_acks:
                self._now.set()
            self._wake.set()

    def commit(self) -> None:
        """Make everything staged durable, then acknowledge the messages behind it."""
        self._stage_alerts()  # the transitions of the staged samples and events join them
        staged = self._staged.take()
        if not len(staged):
            return
        store = self._store
        store.commit(
            lines=staged.lines,
            events=staged.events,
            quarantined=staged.quarantined,
            outbox=self._drainer is not None,
            now_ms=self._clock_ms(),
            resume=[
                cp for m in staged.touched if (cp := self._plant.checkpoint(m)) is not None
            ],
            notifications=staged.notifications,
            alert_state=self._alerting.checkpoints(self._clock_ms())
            if staged.alert_state
            else (),
        )
        self._metrics.commits += 1
        if staged.notifications:
            for notifier in self._notifiers:
                notifier.notify()
        if store.last_drop is not None:
            self._drops.check(self._clock_ms())
        if staged.acks and self.acknowledge is not None:
            self.acknowledge(staged.acks)
            self._metrics.acked += len(staged.acks)
        if self._drainer is not None and staged.lines:
            self._drainer.notify()

    async def run(self) -> None:
        while True:
            await self._wake.wait()
            self._wake.clear()
            # Group commit: let the messages arriving within commit_interval_s join one
            # transaction, but not past commit_eager_acks unacknowledged ones: brokers bound
            # the QoS 1 messages in flight to a client (Mosquitto's max_inflight_messages,
            # 20 by default), so acks gate throughput.
            interval = self._options.commit_interval_s
            if interval > 0 and not self._now.is_set():
                timer = asyncio.get_running_loop().call_later(interval, self._now.set)
                await self._now.wait()
                timer.cancel()
            else:
                await asyncio.sleep(0)
            self._now.clear()
            self.commit()
