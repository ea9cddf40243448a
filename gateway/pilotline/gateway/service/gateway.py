"""The running gateway: collectors in, rules core, durable store and outbox, API.

A thin asyncio shell around the pure core, wired here from parts that each hold one job:
``Ingest`` (the way in, ingest.py), the event handlers (handlers.py), the ``Committer``
(commit.py), the ``RulesTimer`` and ``CatchUp`` (timer.py), the utilization reports
(reports.py), the store's retention (pruning.py), the bookings' lifecycle (bookings.py),
operators' alert actions (actions.py)
and ``/health`` with the gauges (health.py), the collectors (collectors.py). ``Gateway``
builds them from the site's configuration, runs their tasks, and offers the API
(api/ports.py) and the forecasts the few members they read.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import Awaitable, Callable, Collection
from dataclasses import replace
from datetime import tzinfo
from typing import Any

import structlog

from pilotline.gateway.api.metrics import Gauges, Metrics
from pilotline.gateway.clock import Clock, SteadyClock, wall_clock_ms
from pilotline.gateway.clock import monotonic_ms as steady_monotonic_ms
from pilotline.gateway.config import SiteConfig
from pilotline.gateway.forecasts import Forecasts, run_forecasts
from pilotline.gateway.notify import make_senders
from pilotline.gateway.notify.alerting import Alerting, Marks
from pilotline.gateway.service.actions import AlertActions
from pilotline.gateway.service.booking_notices import BookingNotifier
from pilotline.gateway.service.booking_points import BookingPoints
from pilotline.gateway.service.bookings import BookingLifecycle
from pilotline.gateway.service.collectors import (
    Collector,
    mqtt_collector,
    mqtt_topics,
    opcua_collectors,
    sparkplug_collector,
)
from pilotline.gateway.service.commit import Committer
from pilotline.gateway.service.handlers import AlertOutput, EventPipeline, event_handlers
from pilotline.gateway.service.health import Health
from pilotline.gateway.service.ingest import Ingest
from pilotline.gateway.service.interlock import Interlock
from pilotline.gateway.service.options import ServiceOptions
from pilotline.gateway.service.pruning import Pruner
from pilotline.gateway.service.publish_back import PublishBack
from pilotline.gateway.service.publish_back_mqtt import retained_publisher
from pilotline.gateway.service.reports import UtilizationReports
from pilotline.gateway.service.reserved import BookedCapacity, Reserved
from pilotline.gateway.service.staged import Staged
from pilotline.gateway.service.systemd import SystemdNotifier
from pilotline.gateway.service.timer import CatchUp, RulesTimer
from pilotline.gateway.service.usage import cancellation
from pilotline.gateway.sinks.influx.drain import OutboxDrainer
from pilotline.gateway.sinks.influx.writer import InfluxClientWriter, InfluxWriter
from pilotline.gateway.store import Store
from pilotline.gateway.store.alert_state import StoredSilence
from pilotline.rules import Plant
from pilotline.rules.alerts import AlertView
from pilotline.rules.booking import Reservation, Status, Usage, meter
from pilotline.rules.booking.charges import charge
from pilotline.rules.dispatch import Silence
from pilotline.rules.utilization import Utilization

log = structlog.get_logger("pilotline.gateway")


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
        notifier: SystemdNotifier | None = None,
    ) -> None:
        """``collectors=False`` builds the gateway without MQTT and OPC UA collectors (replay
        feeds ``ingest`` itself); ``telemetry=False`` writes no ``telemetry`` points.
        ``monotonic_ms`` pairs an injected ``clock_ms`` with a monotonic clock to detect its
        steps (see clock.py); the real wall clock gets ``time.monotonic``. ``notifier``
        tells systemd when it is ready, alive and stopping (``pilotline run`` passes one
        from the environment; by default nothing is told)."""
        self.config = config
        self.notifier = notifier or SystemdNotifier(None)
        self.options = options = options or ServiceOptions()
        self.clock_ms = clock_ms
        if monotonic_ms is None and clock_ms is wall_clock_ms:
            monotonic_ms = steady_monotonic_ms
        self.steady = SteadyClock(clock_ms, monotonic_ms)
        self.metrics = Metrics()
        self.plant_spec = config.plant_spec()
        self.plant = Plant(self.plant_spec)
        self._zone_of = {m.id: z.id for z, m in config.machines()}
        # The store's lock comes first, before anything connects: one gateway per store.
        self.store = Store(
            config.store,
            exclusive=True,
            outbox_max_points=config.influx.outbox_max_points if config.influx else None,
            outbox_max_bytes=config.influx.outbox_max_bytes if config.influx else None,
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
        points = self.drainer is not None
        self.telemetry = telemetry
        # One sender per alert channel (webhook, e-mail, MQTT), each draining its own rows of
        # ``notifications``.
        self.notifiers = make_senders(config, self.store, self.metrics.notifications)
        # kept current by run_forecasts (a compact forecasts.Forecasts)
        self.forecasts: Forecasts = Forecasts()
        self.resumed, redelivery_below = self._resume()
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

        # What the next commit makes durable, and the parts that stage and commit it.
        self.staged = staged = Staged()
        stage_alerts = AlertOutput(
            self.alerting, staged, self.metrics, site=config.site, points=points
        )
        self.committer = committer = Committer(
            staged=staged,
            store=self.store,
            plant=self.plant,
            alerting=self.alerting,
            stage_alerts=stage_alerts,
            metrics=self.metrics,
            options=options,
            clock_ms=clock_ms,
            notifiers=self.notifiers,
            drainer=self.drainer,
        )
        handlers = event_handlers(
            self.metrics,
            self.alerting,
            clock_ms,
            site=config.site,
            shard_tag=config.shard_tag,
            points=points,
        )
        # Booking-aware capacity: every capacity event carries the live bookings at its time
        # (reserved.py); the core's clocks know nothing of them.
        self.reserved = Reserved(self.store.reservations())
        self.booked = BookedCapacity(self.reserved, self.plant, self.plant_spec.machines)
        # Published back (issue 17): states, capacity and bookings out on the site's broker,
        # as one more handler of the pipeline's events (publish_back.py).
        self.publish_back: PublishBack | None = None
        if config.publish_back is not None and config.mqtt is not None:
            self.publish_back = PublishBack(
                settings=config.publish_back,
                site=config.site,
                plant=self.plant,
                reserved=self.reserved,
                publisher=retained_publisher(
                    config.mqtt, config.site, qos=config.publish_back.qos
                ),
                clock_ms=clock_ms,
            )
            handlers.append(self.publish_back)
        self.stage_events = EventPipeline(handlers, staged, adjust=self.booked.adjust)
        # Until the MQTT backlog the broker kept for us is in, the rules timer waits
        # (timer.CatchUp): the alert rules judge the backlog before the wall clock.
        wants_mqtt = collectors and config.mqtt is not None and bool(mqtt_topics(config))
        self.catch_up = CatchUp(options, self.steady, self.metrics, caught_up=not wants_mqtt)
        self.ingest = ingest = Ingest(
            staged=staged,
            plant=self.plant,
            alerting=self.alerting,
            metrics=self.metrics,
            steady=self.steady,
            catch_up=self.catch_up,
            stage_events=self.stage_events,
            request_commit=committer.request,
            zone_of=self._zone_of,
            site=config.site,
            telemetry=points and telemetry,
            lateness_ms=options.lateness_ms,
            max_skew_ms={m.id: m.max_skew_ms(config.defaults) for _z, m in config.machines()},
            redelivery_below=redelivery_below,
        )

        self.mqtt = mqtt_collector(config, ingest, clock_ms) if wants_mqtt else None
        self.opcua = opcua_collectors(config, ingest, clock_ms) if collectors else []
        for collector in self.opcua:
            for machine, ts_ms in redelivery_below.items():
                collector.resume(machine, ts_ms)
        self.collectors: list[Collector] = []
        mqtt = self.mqtt
        if mqtt is not None:
            self.collectors.append(mqtt)
            committer.acknowledge = mqtt.ack
        self.collectors.extend(self.opcua)
        self.sparkplug = sparkplug_collector(config, ingest, clock_ms) if collectors else None
        if self.sparkplug is not None:
            self.collectors.append(self.sparkplug)

        self.timer = RulesTimer(
            catch_up=self.catch_up,
            subscribed=None if mqtt is None else lambda: mqtt.health().subscribed,
            steady=self.steady,
            clock_ms=clock_ms,
            lateness_ms=options.lateness_ms,
            plant=self.plant,
            alerting=self.alerting,
            collectors=self.collectors,
            advance=ingest.advance,
            stage_alerts=stage_alerts,
            staged=staged,
            request_commit=committer.request,
            alive=self.notifier.alive,
        )
        self.reports = UtilizationReports(
            config=config,
            store=self.store,
            machines=self.plant_spec.machines,
            zone_of=self._zone_of,
            lateness_ms=options.lateness_ms,
            clock_ms=clock_ms,
            commit=committer.commit,
            drainer=self.drainer,
        )
        self.pruner = Pruner(
            retention=config.store_retention,
            store=self.store,
            clock_ms=clock_ms,
            needed_from=self.reports.needed_from_ms,
        )
        self.bookings = BookingLifecycle(
            store=self.store,
            rules_of=config.booking_rules,
            machines=self._zone_of,
            views=self.plant.view,
            clock_ms=clock_ms,
            caught_up=lambda: self.catch_up.caught_up,
            commit=committer.commit,
        )
        # ``booking`` and ``usage`` points, from the store's record of every status move
        self.booking_points = BookingPoints(
            store=self.store,
            site=config.site,
            machines={m.id: m for m in self.plant_spec.machines},
            meter=self._meter,
            charge=self._charge,
            clock_ms=clock_ms,
            commit=committer.commit,
            drainer=self.drainer,
        )
        # Booking moves told through the alert channels that want them (booking_notices.py).
        self.booking_notices = BookingNotifier(
            config=config, store=self.store, senders=self.notifiers, clock_ms=clock_ms,
            views=self.plant.view,
        )
        self.actions = AlertActions(
            self.alerting,
            steady=self.steady,
            clock_ms=clock_ms,
            lateness_ms=options.lateness_ms,
            commit=committer.commit,
        )
        # The soft interlock: each machine's permission to be used, out on MQTT and OPC UA.
        self.interlock = Interlock(
            config=config, store=self.store, metrics=self.metrics, clock_ms=clock_ms
        )
        if self.interlock.active:  # ``interlock: unknown`` alert rules read its nodes
            self.alerting.watch_interlocks(self.interlock.unknown)
        self._health = Health(
            collectors=self.collectors,
            drainer=self.drainer,
            store=self.store,
            store_path=config.store,
            clock_ms=clock_ms,
            started_ms=clock_ms(),
            metrics=self.metrics,
            views=self.plant.view,
            parts=[
                *([self.interlock] if self.interlock.active else []),
                *([self.publish_back] if self.publish_back is not None else []),
            ],
        )

    def _meter(self, res: Reservation, until_ms: int) -> Usage:
        """``res``'s use by ``until_ms`` from its machine's confirmed states."""
        changes = self.bookings.changes(res.start_ms, until_ms, {res.machine})[res.machine]
        return meter(res, changes, until_ms)

    def _charge(self, res: Reservation, usage: Usage, status: Status) -> float:
        """What ``res``, ended in ``status`` with ``usage``, costs under its owner's charge
        rule: the same rule and figures as ``GET /api/usage`` (service/usage.py)."""
        if res.machine not in self._zone_of:
            return 0.0  # a machine no longer configured: no rule applies to it any more
        ended = replace(res, status=status)
        late = was_reused = False
        if status is Status.CANCELLED:
            rules = self.config.booking_rules(res.machine)
            late, was_reused = cancellation(self.store.reservations(), ended, rules)
        rule = self.config.charge_rule(res.machine)
        return charge(rule, ended, usage, late=late, was_reused=was_reused).amount

    def _resume(self) -> tuple[int, dict[str, int]]:
        """Resume every machine from the checkpoints the previous run kept in the store:
        state, open idle window, pending change and staleness clock (see Plant.restore).
        Returns how many were restored and, per machine, the source time of the last sample
        the previous run applied."""
        last_ts: dict[str, int] = {}
        restored = 0
        for cp in self.store.resume_points():
            if not self.plant.restore(cp):
                continue
            restored += 1
            if cp.last_ts_ms is not None:
                last_ts[cp.machine] = cp.last_ts_ms
        if restored:
            log.info(
                "gateway.resumed",
                machines=restored,
                states={v.id: v.state.value for v in self.plant.view()},
                open_windows=sum(v.window_start_ms is not None for v in self.plant.view()),
            )
        return restored, last_ts

    # -- running ---------------------------------------------------------------------------

    async def run(self, *, api: bool = True, ready: asyncio.Event | None = None) -> None:
        """Run until cancelled; on cancellation commit, flush the outbox and close.

        Ready (``ready`` set, systemd told ``READY=1``) once every task runs and the API
        listens; not once the peers answer: a broker that is down is the collectors' to
        retry, and must not fail the start."""
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
                # The API first, and the collectors once it listens: /health and /metrics
                # answer before a broker backlog floods in, so a long catch-up is watched.
                listening = asyncio.Event()
                if api:
                    # Imported here: replay and the CLI's other commands build a Gateway
                    # without the HTTP stack.
                    from pilotline.gateway.api.app import serve_api  # noqa: PLC0415

                    tasks.create_task(serve_api(self, listening), name="http-api")
                else:
                    listening.set()
                tasks.create_task(self.committer.run(), name="committer")
                tasks.create_task(self.timer.run(), name="rules-timer")
                tasks.create_task(run_forecasts(self), name="forecasts")
                for collector in self.collectors:
                    tasks.create_task(
                        _when_set(listening, collector.run), name=f"collector-{collector.name}"
                    )
                if self.drainer is not None:
                    tasks.create_task(self.drainer.run(), name="outbox-drainer")
                    tasks.create_task(self.reports.run(), name="utilization-daily")
                tasks.create_task(self.pruner.run(), name="store-pruner")
                tasks.create_task(self.bookings.run(), name="booking-lifecycle")
                if self.interlock.active:
                    tasks.create_task(self.interlock.run(), name="interlock")
                if self.publish_back is not None:
                    tasks.create_task(self.publish_back.run(), name="publish-back")
                tasks.create_task(
                    self.booked.run(self.stage_events, self.committer.request),
                    name="booked-capacity",
                )
                if self.drainer is not None:
                    tasks.create_task(self.booking_points.run(), name="booking-points")
                tasks.create_task(self.booking_notices.run(), name="booking-notices")
                for notifier in self.notifiers:
                    tasks.create_task(notifier.run(), name=f"notify-{notifier.name}")
                tasks.create_task(self._announce(listening, ready), name="ready")
        finally:
            self.notifier.stopping("stopping: committing and flushing the outbox")
            await self._shutdown()

    async def _announce(self, listening: asyncio.Event, ready: asyncio.Event | None) -> None:
        await listening.wait()
        self.notifier.ready(
            f"running: {len(self._zone_of)} machines, {len(self.collectors)} collectors"
        )
        # Everything built at start-up (the configuration, the plant, the API's routes) lives
        # as long as the gateway: out of the collector's sight, a full collection of a large
        # site's objects no longer stalls the loop for tens of ms (benchmarks/README.md,
        # "Booking": /api/offers p99 over 1,000 machines). Collected first: only what lives.
        gc.collect()
        gc.freeze()
        if ready is not None:
            ready.set()

    async def _shutdown(self) -> None:
        self.commit()
        now = self.clock_ms()
        self.store.commit(now_ms=now, alert_state=self.alerting.save_now(now))
        if self.drainer is not None:
            depth = self.store.outbox_depth()
            with contextlib.suppress(Exception):
                async with asyncio.timeout(self.options.stop_timeout_s):
                    await asyncio.shield(self.drainer.flush(self.options.stop_timeout_s))
            log.info(
                "outbox.flushed_on_stop",
                before=depth,
                left=self.store.outbox_depth(),
            )
        if self.writer is not None:
            self.writer.close()
        self.store.close()
        self.notifier.close()
        log.info("gateway.stopped")

    # -- what tests, replay, the forecasts and the API call ---------------------------------

    @property
    def caught_up(self) -> bool:
        """Whether the rules timer runs (see timer.CatchUp); tests without a broker set it."""
        return self.catch_up.caught_up

    @caught_up.setter
    def caught_up(self, value: bool) -> None:
        self.catch_up.caught_up = value

    def commit(self) -> None:
        """Make everything staged durable, then acknowledge the messages behind it."""
        self.committer.commit()

    def tick(self) -> float:
        """One turn of the rules timer; returns how long to sleep before the next."""
        return self.timer.tick()

    def stage_lines(self, lines: list[tuple[int, str]]) -> None:
        """Points computed outside the sample path (forecasts) join a commit."""
        self.ingest.lines(lines)

    @property
    def points(self) -> bool:
        """Whether points go to InfluxDB (through the outbox)."""
        return self.drainer is not None

    def health(self) -> dict[str, Any]:
        return self._health.report()

    def gauges(self) -> Gauges:
        return self._health.gauges()

    @property
    def report_tz(self) -> tzinfo:
        return self.reports.tz

    @property
    def settle_ms(self) -> int:
        return self.reports.settle_ms

    def utilization(
        self, from_ms: int, to_ms: int, *, among: Collection[str] | None = None
    ) -> Utilization:
        return self.reports.utilization(from_ms, to_ms, among=among)

    def report_utilization(self) -> list[int]:
        return self.reports.report()

    def acknowledge(self, rule: str, machine: str, by: str, comment: str = "") -> int | None:
        return self.actions.acknowledge(rule, machine, by, comment)

    def add_silence(
        self, matchers: dict[str, str], starts_ms: int, ends_ms: int, by: str, comment: str = ""
    ) -> Silence:
        return self.actions.add_silence(matchers, starts_ms, ends_ms, by, comment)

    def end_silence(self, silence_id: str) -> StoredSilence | None:
        return self.actions.end_silence(silence_id)

    def silences(self) -> list[StoredSilence]:
        return self.actions.silences()

    def alert_marks(self, view: AlertView) -> Marks:
        return self.actions.marks(view)


async def _when_set(event: asyncio.Event, run: Callable[[], Awaitable[None]]) -> None:
    await event.wait()
    await run()
