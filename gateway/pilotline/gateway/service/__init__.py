"""The running gateway: collectors in, rules core, durable store and outbox, API.

A thin asyncio shell around the pure core. Collectors call ``_on_sample`` synchronously in the
event loop; the sample's telemetry point and the core's events are staged, and a short
batching interval later one SQLite transaction makes all of them durable, after which the
MQTT messages behind them are acknowledged to the broker. A gateway killed at any moment
therefore loses nothing: what was not committed was not acknowledged, and the broker
delivers it again.

Time: the core runs on a watermark, ``wall clock - lateness``, so a sample that arrives a
little after its source time is still applied in order. Samples from further in the future
than ``max_future_s`` are refused (a source with a wrong clock must not close windows ahead
of time).
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import tzinfo
from typing import TYPE_CHECKING, Any

import structlog

from pilotline.collectors.mqtt.collector import AckToken, MqttCollector, Quarantined
from pilotline.gateway.api.app import serve_api
from pilotline.gateway.api.metrics import Gauges, Metrics
from pilotline.gateway.clock import SteadyClock
from pilotline.gateway.clock import monotonic_ms as steady_monotonic_ms
from pilotline.gateway.config import SiteConfig
from pilotline.gateway.forecasts import run_forecasts
from pilotline.gateway.notify import make_senders, notification_rows
from pilotline.gateway.notify.alerting import Alerting, Marks
from pilotline.gateway.sinks.influx.drain import OutboxDrainer
from pilotline.gateway.sinks.influx.points import (
    PRIORITY_EVENT,
    PRIORITY_TELEMETRY,
    alert_rows,
    event_rows,
    telemetry_line,
    utilization_rows,
)
from pilotline.gateway.sinks.influx.writer import InfluxClientWriter, InfluxWriter
from pilotline.gateway.store import OutboxDrop, QuarantineRow, Store
from pilotline.gateway.store.alert_state import StoredSilence
from pilotline.rules import (
    Event,
    IdleWindowClosed,
    Plant,
    Sample,
    SampleRejected,
    State,
    StateChanged,
)
from pilotline.rules.alerts import AlertView
from pilotline.rules.dispatch import Notification, Silence
from pilotline.rules.forecast import HourForecast
from pilotline.rules.utilization import (
    StateChange,
    Utilization,
    day_start_ms,
    next_day_ms,
    utilization,
)

if TYPE_CHECKING:  # asyncua is imported only for a site with OPC UA machines (see __init__)
    from pilotline.collectors.opcua.collector import OpcuaCollector
    from pilotline.collectors.opcua.collector import Quarantined as OpcuaQuarantined

log = structlog.get_logger("pilotline.gateway")

Clock = Callable[[], int]


def wall_clock_ms() -> int:
    return time.time_ns() // 1_000_000


UTILIZATION_REPORT = "utilization"
"""``reports.kind`` of the daily ``utilization`` points in the store."""
UTILIZATION_BACKFILL_DAYS = 31
"""After a long stop, completed days are written back this far at most."""
DROP_LOG_INTERVAL_MS = 10_000
"""``outbox.dropped``: one line per burst of drops, and one this often while it lasts."""
DROPPING_UNHEALTHY_MS = 60_000
"""/health's influx part stays unhealthy this long after the outbox limit dropped a line."""


@dataclass
class ServiceOptions:
    lateness_ms: int = 2_000
    max_future_s: float = 300.0
    # Group commit: the committer waits up to commit_interval_s after the first staged item
    # for more to join, and commits at once when commit_eager_acks MQTT messages wait for
    # their ack (below Mosquitto's default in-flight window of 20, so a broker held back by
    # its window never waits for the linger). Measured at 2,000 samples/s: 1.5 samples per
    # commit and ~290 us of CPU per sample without the linger (docs/architecture.md).
    commit_interval_s: float = 0.010
    commit_eager_acks: int = 16
    commit_max_items: int = 5_000
    stop_timeout_s: float = 8.0
    catch_up_quiet_s: float = 1.0
    catch_up_max_s: float = 60.0


@dataclass
class _Staged:
    lines: list[tuple[int, str]] = field(default_factory=list)
    events: list[Event] = field(default_factory=list)
    quarantined: list[QuarantineRow] = field(default_factory=list)
    acks: list[AckToken] = field(default_factory=list)
    touched: set[str] = field(default_factory=set)  # machines whose checkpoint to keep
    notifications: list[tuple[str, str]] = field(default_factory=list)  # (channel, payload)
    alert_state: bool = False  # the alert cores' checkpoints are due with this commit

    def __len__(self) -> int:
        return (
            len(self.notifications)
            + len(self.lines)
            + len(self.events)
            + len(self.quarantined)
            + len(self.acks)
            + len(self.touched)
            + self.alert_state
        )


class Gateway:
    def __init__(
        self,
        config: SiteConfig,
        *,
        writer: InfluxWriter | None = None,
        clock_ms: Clock = wall_clock_ms,
        options: ServiceOptions | None = None,
        collectors: bool = True,
        telemetry: bool = True,
        monotonic_ms: Clock | None = None,
    ) -> None:
        """``collectors=False`` builds the gateway without MQTT and OPC UA collectors (replay
        feeds ``_on_sample`` itself); ``telemetry=False`` writes no ``telemetry`` points.
        ``monotonic_ms`` pairs an injected ``clock_ms`` with a monotonic clock to detect its
        steps (see clock.py); the real wall clock gets ``time.monotonic``."""
        self.config = config
        self.options = options or ServiceOptions()
        self.clock_ms = clock_ms
        if monotonic_ms is None and clock_ms is wall_clock_ms:
            monotonic_ms = steady_monotonic_ms
        self.steady = SteadyClock(clock_ms, monotonic_ms)
        self.metrics = Metrics()
        self.plant_spec = config.plant_spec()
        self.plant = Plant(self.plant_spec)
        self._zone_of = {m.id: z.id for z, m in config.machines()}
        self.store = Store(
            config.store,
            outbox_max_points=config.influx.outbox_max_points if config.influx else None,
        )
        if writer is None and config.influx is not None:
            writer = InfluxClientWriter(
                config.influx.url,
                config.influx.org,
                config.influx.bucket,
                config.influx.token(),
                timeout_s=config.influx.timeout_s,
                ca_file=str(config.influx.ca_file) if config.influx.ca_file else None,
            )
        self.writer = writer
        self.drainer = (
            OutboxDrainer(
                self.store,
                writer,
                batch_size=config.influx.batch_size if config.influx else 5000,
                flush_interval_s=config.influx.flush_interval_s if config.influx else 1.0,
            )
            if writer is not None
            else None
        )
        self.telemetry = telemetry
        # One sender per alert channel (webhook, e-mail, MQTT), each draining its own rows of
        # ``notifications``.
        self.notifiers = make_senders(config, self.store, self.metrics.notifications)
        self.mqtt: MqttCollector | None = None
        topics = {m.mqtt.topic: m.id for _, m in config.machines() if m.mqtt is not None}
        if config.mqtt is not None and topics and collectors:
            self.mqtt = MqttCollector(
                config.mqtt,
                topics,
                self._on_sample,
                self._on_reject,
                client_id=config.mqtt.client_id or f"pilotline-{config.site}",
                clock_ms=clock_ms,
            )
        self.opcua: list[OpcuaCollector] = []
        opcua_machines = [
            (m.id, m.opcua, m.state.signal) for _, m in config.machines() if m.opcua is not None
        ]
        if opcua_machines and collectors:
            # Imported here: asyncua costs ~22 MiB and 0.3 s, for nothing on an MQTT-only site.
            from pilotline.collectors.opcua.collector import (  # noqa: PLC0415
                OpcuaCollector,
                machines_by_endpoint,
            )

            # One connection per endpoint, shared by its machines; the client certificate
            # lives beside the store so the servers' trust in it survives restarts.
            pki_dir = config.store.parent / "opcua-pki"
            self.opcua = [
                OpcuaCollector(
                    endpoint,
                    machines,
                    self._on_opcua_sample,
                    self._on_opcua_reject,
                    pki_dir=pki_dir,
                    clock_ms=clock_ms,
                )
                for endpoint, machines in machines_by_endpoint(opcua_machines).items()
            ]
        # kept current by run_forecasts (a compact forecasts.Forecasts)
        self.forecasts: Mapping[str, Sequence[HourForecast]] = {}
        self.resumed = self._resume()
        # Alert rules run on the plant's events; a resumed machine starts in its restored state,
        # and the alert cores continue from their checkpoints (alerting.py).
        self.alerting = Alerting(
            config,
            self.plant_spec.machines,
            self.store.alert_state(),
            states={v.id: v.state for v in self.plant.view()},
            now_ms=clock_ms(),
        )
        self.alerts = self.alerting.alerts
        # Until the MQTT backlog the broker kept for us is in, time moves only with the
        # samples' source times (see _caught_up_now).
        self.caught_up = self.mqtt is None
        self._catch_up_began = time.monotonic()
        self._subscribed_at: float | None = None
        self._last_arrival: float | None = None
        self._last_arrival_ts = 0
        self._staged = _Staged()
        # A lower bound of the newest acceptable source time (future_limit_base() only grows):
        # samples below it skip the clock reads; reset at each commit (see _on_sample).
        self._future_floor = -math.inf
        self._wake_committer = asyncio.Event()
        self._commit_now = asyncio.Event()  # ends the committer's linger early
        self._started_ms = clock_ms()
        self._drop_seen: OutboxDrop | None = None  # the store's last drop, once handled
        self._drop_burst: dict[int, int] = {}  # dropped since the last outbox.dropped line
        self._drop_logged_ms = 0
        self._next_report_ms = 0

    # -- the hot path (synchronous, in the event loop) -------------------------------------

    def _on_sample(self, sample: Sample, token: AckToken | None) -> None:
        staged = self._staged
        if token is not None:
            staged.acks.append(token)
            resumed = self._redelivery_below.get(sample.machine)
            if resumed is not None and sample.ts_ms < resumed:
                # Older than what the previous run applied: a message it made durable but
                # could not acknowledge, delivered again. Its telemetry is rewritten (the
                # same point, harmless); the rules have it already.
                self.metrics.rejected[("rules", "duplicate")] += 1
                self._stage_telemetry(sample)
                self._request_commit()
                return
        if not self.caught_up:
            self._last_arrival = time.monotonic()
            self._last_arrival_ts = sample.ts_ms
        if sample.ts_ms > self._future_floor:
            # The clocks are read (and a step of the wall clock noticed) for the first sample
            # after each commit, or one beyond the bound: 0.6 us a sample saved.
            now = self.steady.future_limit_base()
            self._future_floor = now + self.options.max_future_s * 1000
        if sample.ts_ms > self._future_floor:
            self._stage_events(
                [
                    SampleRejected(
                        sample.machine,
                        sample.ts_ms,
                        "future",
                        f"{(sample.ts_ms - now) / 1000:.0f} s ahead of the gateway clock",
                    )
                ]
            )
        else:
            self.metrics.samples[sample.machine] += 1
            self._stage_telemetry(sample)
            self.plant.receive(sample)
            events = self.plant.events()
            if events:
                self._stage_events(events)
            # Alert transitions are collected once per commit (``commit``), not per sample.
            self.alerting.receive(sample)
            if sample.machine in self._zone_of:
                staged.touched.add(sample.machine)
                if self.steady.stepped:
                    self.steady.observe(sample.ts_ms)
        self._request_commit()

    def _stage_telemetry(self, sample: Sample) -> None:
        zone = self._zone_of.get(sample.machine)
        if zone is not None and self.drainer is not None and self.telemetry:
            site = self.config.site
            line = telemetry_line(site, zone, sample.machine, sample.values, sample.ts_ms)
            if line is not None:
                self._staged.lines.append((PRIORITY_TELEMETRY, line))

    def _resume(self) -> int:
        """Resume every machine from the checkpoints the previous run kept in the store:
        state, open idle window, pending change and staleness clock (see Plant.restore)."""
        self._redelivery_below: dict[str, int] = {}
        restored = 0
        for cp in self.store.resume_points():
            if not self.plant.restore(cp):
                continue
            restored += 1
            if cp.last_ts_ms is not None:
                self._redelivery_below[cp.machine] = cp.last_ts_ms
                for collector in self.opcua:
                    collector.resume(cp.machine, cp.last_ts_ms)
        if restored:
            log.info(
                "gateway.resumed",
                machines=restored,
                states={v.id: v.state.value for v in self.plant.view()},
                open_windows=sum(v.window_start_ms is not None for v in self.plant.view()),
            )
        return restored

    def _on_reject(self, item: Quarantined, token: AckToken) -> None:
        self._quarantine("mqtt", item)
        self._staged.acks.append(token)
        self._request_commit()

    def _on_opcua_sample(self, sample: Sample) -> None:
        self._on_sample(sample, None)  # OPC UA has nothing to acknowledge

    def _on_opcua_reject(self, item: OpcuaQuarantined) -> None:
        self._quarantine("opcua", item)
        self._request_commit()

    def _quarantine(self, source: str, item: Quarantined | OpcuaQuarantined) -> None:
        self.metrics.rejected[(source, item.reason)] += 1
        self._staged.quarantined.append(
            QuarantineRow(item.arrival_ms, source, item.topic, item.machine, item.reason, item.head)
        )

    def _stage_events(self, events: list[Event]) -> None:
        if not events:
            return
        staged = self._staged
        now = self.clock_ms()
        for event in events:
            self.metrics.events[type(event).__name__] += 1
            if isinstance(event, StateChanged | IdleWindowClosed):
                staged.touched.add(event.machine)  # the timer moved it: keep its checkpoint
            if isinstance(event, SampleRejected):
                key = ("rules", event.reason)
                if not self.metrics.rejected[key]:  # once per kind, with a sample
                    log.warning(
                        "rules.sample_rejected",
                        machine=event.machine,
                        reason=event.reason,
                        detail=event.detail,
                        note="logged once per reason; see /metrics and /api/quarantine",
                    )
                self.metrics.rejected[key] += 1
                staged.quarantined.append(
                    QuarantineRow(
                        now, "rules", "", event.machine, event.reason, event.detail.encode()
                    )
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
        staged.events.extend(events)
        if self.drainer is not None:
            staged.lines.extend(event_rows(self.config.site, events, self.config.shard_tag))
        self.alerting.observe(events)

    def _stage_alerts(self) -> bool:
        """The alert core's transitions become ``alert`` points, and the dispatcher's
        notifications rows of the notification queue, in the same commit as the checkpoint
        that records them; True if there were any."""
        transitions, notifications = self.alerting.drain()
        if notifications:
            self._stage_notifications(notifications)
        if not transitions:
            return bool(notifications)
        for t in transitions:
            self.metrics.events["AlertTransition"] += 1
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
        if self.drainer is not None:
            self._staged.lines.extend(alert_rows(self.config.site, transitions))
        self._staged.alert_state = True
        return True

    def _stage_notifications(self, notifications: list[Notification]) -> None:
        for n in notifications:
            log.info(
                "alert.notification",
                channel=n.channel,
                kind=n.kind,
                group=dict(n.group),
                alerts=len(n.alerts),
                at_ms=n.ts_ms,
            )
        self._staged.notifications.extend(notification_rows(self.config.site, notifications))
        self._staged.alert_state = True

    def stage_lines(self, lines: list[tuple[int, str]]) -> None:
        """Points computed outside the sample path (forecasts, utilization) join a commit."""
        self._staged.lines.extend(lines)
        self._request_commit()

    def _request_commit(self) -> None:
        staged = self._staged
        if len(staged) >= self.options.commit_max_items:
            self.commit()
        else:
            if len(staged.acks) >= self.options.commit_eager_acks:
                self._commit_now.set()
            self._wake_committer.set()

    def commit(self) -> None:
        """Make everything staged durable, then acknowledge the messages behind it."""
        self._stage_alerts()  # the transitions of the staged samples and events join them
        staged, self._staged = self._staged, _Staged()
        self._future_floor = -math.inf  # the next sample reads the clocks again
        if not len(staged):
            return
        self.store.commit(
            lines=staged.lines,
            events=staged.events,
            quarantined=staged.quarantined,
            outbox=self.drainer is not None,
            now_ms=self.clock_ms(),
            resume=[
                cp for m in staged.touched if (cp := self.plant.checkpoint(m)) is not None
            ],
            notifications=staged.notifications,
            alert_state=self.alerting.checkpoints(self.clock_ms()) if staged.alert_state else (),
        )
        self.metrics.commits += 1
        if staged.notifications:
            for notifier in self.notifiers:
                notifier.notify()
        if self.store.last_drop is not None:
            self._log_drops(self.clock_ms())
        if staged.acks and self.mqtt is not None:
            self.mqtt.ack(staged.acks)
            self.metrics.acked += len(staged.acks)
        if self.drainer is not None and staged.lines:
            self.drainer.notify()

    def _log_drops(self, now_ms: int) -> None:
        """``outbox.dropped`` once per burst of drops: when it starts, at most every
        ``DROP_LOG_INTERVAL_MS`` while it lasts, and when it ended (no drop for that long),
        each line with the counts since the previous one."""
        drop = self.store.last_drop
        seen = self._drop_seen
        if drop is not None and drop is not seen:
            starts = seen is None or drop.at_ms - seen.at_ms > DROP_LOG_INTERVAL_MS
            if starts and self._drop_burst:
                self._emit_drops("ended", seen)
            self._drop_seen = drop
            for priority, n in drop.dropped.items():
                self._drop_burst[priority] = self._drop_burst.get(priority, 0) + n
            if starts or now_ms - self._drop_logged_ms >= DROP_LOG_INTERVAL_MS:
                self._emit_drops("started" if starts else "continues", drop)
        elif seen is not None and self._drop_burst and now_ms - seen.at_ms > DROP_LOG_INTERVAL_MS:
            self._emit_drops("ended", seen)

    def _emit_drops(self, burst: str, drop: OutboxDrop | None) -> None:
        log.warning(
            "outbox.dropped",
            burst=burst,
            telemetry=self._drop_burst.get(PRIORITY_TELEMETRY, 0),
            events=self._drop_burst.get(PRIORITY_EVENT, 0),
            depth=None if drop is None else drop.depth,
            limit=self.store.outbox_max_points,
            note="outbox full (InfluxDB away too long): raw telemetry is dropped first, oldest"
            " first; counts are since the previous outbox.dropped line",
        )
        self._drop_burst = {}
        self._drop_logged_ms = self.clock_ms()

    # -- tasks -----------------------------------------------------------------------------

    async def _committer(self) -> None:
        while True:
            await self._wake_committer.wait()
            self._wake_committer.clear()
            # Group commit: let the messages arriving within commit_interval_s join one
            # transaction, but not past commit_eager_acks unacknowledged ones: brokers bound
            # the QoS 1 messages in flight to a client (Mosquitto's max_inflight_messages,
            # 20 by default), so acks gate throughput.
            interval = self.options.commit_interval_s
            if interval > 0 and not self._commit_now.is_set():
                timer = asyncio.get_running_loop().call_later(interval, self._commit_now.set)
                await self._commit_now.wait()
                timer.cancel()
            else:
                await asyncio.sleep(0)
            self._commit_now.clear()
            self.commit()

    async def _timer(self) -> None:
        """Arm one timer for the core's next deadline, on the watermark clock.

        The timer wakes at least once a second: a sample may have brought an earlier deadline,
        and events are stamped at their deadline's time whenever they fire, so a late wake-up
        delays an event without changing it.
        """
        while True:  # noqa: ASYNC110 (a timer, not a wait for a condition)
            await asyncio.sleep(self.tick())

    def tick(self) -> float:
        """One turn of the rules timer: move the core to the watermark (once caught up) and
        stage what fired; returns how long to sleep before the next turn."""
        if not self.caught_up:
            self.caught_up = self._caught_up_now()
            if not self.caught_up:
                return 0.1
        watermark = self.steady.now() - self.options.lateness_ms
        self.plant.handle_timer(watermark)
        events = self.plant.events()
        if events:
            self._stage_events(events)
            self._request_commit()
        for name, connected in self._collector_states():
            self.alerting.collector(name, connected, watermark)
        self.alerting.handle_timer(watermark)
        if self._stage_alerts() or self.alerting.checkpoints_due(self.clock_ms()):
            self._staged.alert_state = True
            self._request_commit()
        deadlines = [d for d in (self.plant.next_deadline(), self.alerting.next_deadline()) if d]
        deadline = min(deadlines) if deadlines else None
        delay = 1.0 if deadline is None else max(0.0, (deadline - watermark) / 1000)
        return min(delay, 1.0)

    def _caught_up_now(self) -> bool:
        """Has the broker delivered the backlog it kept for our session?

        After a restart, Mosquitto delivers the QoS 1 messages queued while the gateway was
        away, stamped at their source times, before live ones. If the rules timer moved the
        core to the wall clock first, every machine would look silent since the kill (offline,
        windows closed) and the backlog would then be applied late, at the wall clock. So the
        timer waits (time moves only with the samples) until the subscription is confirmed
        and then either no message came for ``catch_up_quiet_s`` or one arrived on time (its
        source time within ``lateness`` of the clock); ``catch_up_max_s`` at the most."""
        mono = time.monotonic()
        reason = None
        if mono - self._catch_up_began >= self.options.catch_up_max_s:
            reason = "timeout"
        elif self.mqtt is None:
            reason = "no backlog"
        elif self.mqtt.health().subscribed:
            if self._subscribed_at is None:
                self._subscribed_at = mono
            quiet = self.options.catch_up_quiet_s
            last = self._last_arrival
            if last is not None and (
                self._last_arrival_ts >= self.steady.now() - self.options.lateness_ms
            ):
                reason = "live"
            elif mono - self._subscribed_at >= quiet and (last is None or mono - last >= quiet):
                reason = "quiet"
        if reason is None:
            return False
        log.info(
            "gateway.caught_up",
            reason=reason,
            after_s=round(mono - self._catch_up_began, 3),
            samples=sum(self.metrics.samples.values()),
        )
        return True

    async def run(self, *, api: bool = True, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled; on cancellation commit, flush the outbox and close."""
        log.info(
            "gateway.started",
            site=self.config.site,
            machines=len(self._zone_of),
            mqtt=self.mqtt is not None,
            opcua_endpoints=len(self.opcua),
            influx=self.drainer is not None,
            store=str(self.config.store),
        )
        try:
            async with asyncio.TaskGroup() as tasks:
                tasks.create_task(self._committer(), name="committer")
                tasks.create_task(self._timer(), name="rules-timer")
                tasks.create_task(run_forecasts(self), name="forecasts")
                if self.mqtt is not None:
                    tasks.create_task(self.mqtt.run(), name="collector-mqtt")
                for collector in self.opcua:
                    tasks.create_task(collector.run(), name=f"collector-{collector.name}")
                if self.drainer is not None:
                    tasks.create_task(self.drainer.run(), name="outbox-drainer")
                    tasks.create_task(self._daily_utilization(), name="utilization-daily")
                for notifier in self.notifiers:
                    tasks.create_task(notifier.run(), name=f"notify-{notifier.name}")
                if api:
                    tasks.create_task(serve_api(self), name="http-api")
                if ready is not None:
                    ready.set()
        finally:
            await self._shutdown()

    async def _daily_utilization(self) -> None:
        """Write each completed day's ``utilization`` points once (see ``report_utilization``).

        Wakes once a second, like the rules timer, and does work only when a day is due.
        """
        while True:
            if self.clock_ms() >= self._next_report_ms:
                self.report_utilization()
            await asyncio.sleep(1.0)

    # -- utilization -----------------------------------------------------------------------

    @property
    def report_tz(self) -> tzinfo:
        """Days of the daily report: the site's ``timezone:`` (UTC by default)."""
        return self.config.tz

    @property
    def settle_ms(self) -> int:
        """How long after a day ended every state change of that day is known: the events
        of a day come out up to ``debounce`` (a confirmation) or ``stale_after`` (offline
        at the last sample) after it, on the watermark clock (``lateness`` behind)."""
        longest = max(
            (max(m.debounce_ms, m.stale_after_ms) for m in self.plant_spec.machines), default=0
        )
        return self.options.lateness_ms + longest + 1_000

    def utilization(
        self, from_ms: int, to_ms: int, *, among: Collection[str] | None = None
    ) -> Utilization:
        """Utilization of every configured machine (or only those ``among``) and their zones
        over ``[from_ms, to_ms)``, from the embedded store's state history, up to the
        gateway's clock."""
        changes = [
            StateChange(row["machine"], row["zone"], row["ts_ms"], State(row["state"]))
            for row in self.store.state_history(from_ms, to_ms)
            if among is None or row["machine"] in among
        ]
        machines = {
            m: z for m, z in self._zone_of.items() if among is None or m in among
        }
        return utilization(changes, from_ms, to_ms, now_ms=self.clock_ms(), machines=machines)

    def report_utilization(self) -> list[int]:
        """Write the ``utilization`` points of every completed day not written yet (from the
        first recorded state, at most ``UTILIZATION_BACKFILL_DAYS`` back); returns the days
        written (their start, epoch ms). Each day is one transaction with its record in the
        store's ``reports``, so a restart neither skips nor repeats a day."""
        tz = self.report_tz
        self.commit()  # the state history must include what is staged
        now = self.clock_ms()
        complete_until = day_start_ms(now - self.settle_ms, tz)
        self._next_report_ms = next_day_ms(complete_until, tz) + self.settle_ms
        last = self.store.last_report(UTILIZATION_REPORT)
        if last is not None:
            day = next_day_ms(last, tz)
        else:
            first = self.store.first_state_ms()
            if first is None:
                return []
            day = day_start_ms(first, tz)
        oldest = day_start_ms(complete_until - UTILIZATION_BACKFILL_DAYS * 86_400_000, tz)
        day = max(day, oldest)
        written: list[int] = []
        while day < complete_until:
            end = next_day_ms(day, tz)
            rows = utilization_rows(
                self.config.site, self.utilization(day, end), day, self.config.shard_tag
            )
            self.store.commit_report(
                UTILIZATION_REPORT,
                day,
                lines=rows,
                outbox=self.drainer is not None,
                now_ms=now,
            )
            written.append(day)
            day = end
        if written and self.drainer is not None:
            self.drainer.notify()
            log.info("utilization.reported", days=len(written), last_day_ms=written[-1])
        return written

    async def _shutdown(self) -> None:
        self.commit()
        now = self.clock_ms()
        self.store.commit(now_ms=now, alert_state=self.alerting.save_now(now))
        if self.drainer is not None:
            depth = self.store.outbox_depth()
            with contextlib.suppress(Exception):
                await asyncio.wait_for(
                    asyncio.shield(self.drainer.flush(self.options.stop_timeout_s)),
                    self.options.stop_timeout_s,
                )
            log.info(
                "outbox.flushed_on_stop",
                before=depth,
                left=self.store.outbox_depth(),
            )
        if self.writer is not None:
            self.writer.close()
        self.store.close()
        log.info("gateway.stopped")

    # -- alerts: operators' actions and views ----------------------------------------------

    def _collector_states(self) -> list[tuple[str, bool]]:
        out = []
        if self.mqtt is not None:
            out.append(("mqtt", self.mqtt.health().connected))
        out.extend((c.name, c.health().connected) for c in self.opcua)
        return out

    def _alert_now(self) -> int:
        """Operators' actions are applied on the rules' own (watermark) clock."""
        return max(self.steady.now() - self.options.lateness_ms, self.alerts.now_ms or 0)

    def acknowledge(self, rule: str, machine: str, by: str, comment: str = "") -> int | None:
        """Acknowledge a firing alert; its time (epoch ms), or None if it is not firing."""
        at = self._alert_now()
        return at if self.alerting.acknowledge(rule, machine, by, at, comment) else None

    def add_silence(
        self, matchers: dict[str, str], starts_ms: int, ends_ms: int, by: str, comment: str = ""
    ) -> Silence:
        silence = self.alerting.add_silence(
            matchers=matchers,
            starts_ms=starts_ms,
            ends_ms=ends_ms,
            by=by,
            comment=comment,
            at_ms=self._alert_now(),
        )
        self._after_operator_action()
        return silence

    def end_silence(self, silence_id: str) -> StoredSilence | None:
        ended = self.alerting.end_silence(silence_id, self._alert_now())
        self._after_operator_action()
        return ended

    def silences(self) -> list[StoredSilence]:
        return self.alerting.silences(self.clock_ms())

    def alert_marks(self, view: AlertView) -> Marks:
        # Silences are shown as operators set them: active by the wall clock.
        return self.alerting.marks(view, self.clock_ms())

    def _after_operator_action(self) -> None:
        """A silence that ended may release notifications at once: commit them (``commit``
        collects the dispatcher's output; it does nothing when nothing is staged)."""
        self.commit()

    # -- views for the API -----------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        now = self.clock_ms()
        parts: dict[str, Any] = {}
        healthy = True
        if self.mqtt is not None:
            h = self.mqtt.health()
            why = None
            if not h.connected:
                why = f"disconnected: {h.last_error or 'connecting'}"
            elif not h.subscribed and not h.session_present:
                # A resumed session keeps its subscriptions: the broker delivers the backlog
                # it queued before it answers the new SUBSCRIBE, which may take a while and
                # is not a fault.
                why = "subscriptions not confirmed by the broker"
            parts["mqtt"] = {
                "healthy": why is None,
                "why": why,
                "connected": h.connected,
                "session_resumed": h.session_present,
                "subscribed": h.subscribed,
                "since_ms": h.since_ms,
                "reconnects": h.reconnects,
                "received": h.received,
                "unacked": h.unacked,
                "read_pauses": h.pauses,
                "rejected": dict(h.rejected),
                "subscriptions": {
                    topic: {
                        "last_message_ms": last,
                        "silent_for_s": None if last is None else round((now - last) / 1000, 1),
                    }
                    for topic, last in h.topics.items()
                },
            }
            healthy &= why is None
        for collector in self.opcua:
            o = collector.health()
            why = None
            if not o.connected:
                down_s = None if o.down_since_ms is None else (now - o.down_since_ms) // 1000
                since = "" if down_s is None else f" for {down_s} s"
                why = f"{o.endpoint} unreachable{since}: {o.last_error or 'connecting'}"
            elif o.missing_nodes:
                why = f"{len(o.missing_nodes)} node(s) missing: {'; '.join(o.missing_nodes[:5])}"
            parts[collector.name] = {
                "healthy": why is None,
                "why": why,
                "connected": o.connected,
                "since_ms": o.since_ms,
                "down_since_ms": o.down_since_ms,
                "reconnects": o.reconnects,
                "machines": o.machines,
                "monitored_items": o.monitored_items,
                "missing_nodes": o.missing_nodes,
                "bad_values": o.bad_values,
                "notifications": o.notifications,
                "last_heartbeat_ms": o.last_heartbeat_ms,
                "heartbeat_silent_for_s": None
                if o.last_heartbeat_ms is None
                else round((now - o.last_heartbeat_ms) / 1000, 1),
            }
            healthy &= why is None
        if self.drainer is not None:
            s = self.drainer.stats()
            oldest = self.store.outbox_oldest_ms()
            why = None if s.healthy else f"writes failing: {s.last_error}"
            drop = self.store.last_drop
            if drop is not None and now - drop.at_ms < DROPPING_UNHEALTHY_MS:
                dropped = self.store.outbox_dropped
                full = (
                    f"outbox full ({self.store.outbox_max_points} points): dropping"
                    f" (since start {dropped.get(PRIORITY_TELEMETRY, 0)} telemetry,"
                    f" {dropped.get(PRIORITY_EVENT, 0)} events;"
                    f" last {round((now - drop.at_ms) / 1000, 1)} s ago)"
                )
                why = full if why is None else f"{why}; {full}"
            parts["influx"] = {
                "healthy": why is None,
                "why": why,
                "written": s.written,
                "retries": s.retries,
                "outbox_depth": self.store.outbox_depth(),
                "outbox_max_points": self.store.outbox_max_points,
                "outbox_dropped": {str(p): n for p, n in sorted(self.store.outbox_dropped.items())},
                "oldest_unsent_s": None if oldest is None else round((now - oldest) / 1000, 1),
            }
            healthy &= why is None
        parts["store"] = {"healthy": True, "why": None, "path": str(self.config.store)}
        return {"healthy": healthy, "uptime_s": round((now - self._started_ms) / 1000, 1), **parts}

    def gauges(self) -> Gauges:
        def collectors() -> list[tuple[str, bool, int, int, int]]:
            out = []
            if self.mqtt is not None:
                h = self.mqtt.health()
                out.append(("mqtt", h.connected, h.reconnects, 0, h.received))
            for collector in self.opcua:
                o = collector.health()
                out.append(
                    (collector.name, o.connected, o.reconnects, o.bad_values, o.notifications)
                )
            return out

        def oldest_age() -> float:
            oldest = self.store.outbox_oldest_ms()
            return 0.0 if oldest is None else max(0.0, (self.clock_ms() - oldest) / 1000)

        drainer = self.drainer
        return Gauges(
            outbox_depth=self.store.outbox_depth,
            outbox_oldest_age_s=oldest_age,
            points_written=lambda: drainer.stats().written if drainer else 0,
            write_retries=lambda: drainer.stats().retries if drainer else 0,
            write_errors=lambda: drainer.stats().errors if drainer else 0,
            collectors=collectors,
            outbox_dropped=lambda: dict(self.store.outbox_dropped),
        )
