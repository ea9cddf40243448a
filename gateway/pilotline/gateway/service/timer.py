"""The rules timer: the gateway's clock, the watermark, reaches the core and the alert rules.

Time: the gateway's clock is ``wall clock - lateness``, so a sample that arrives a little
after its source time is still applied in order. The core keeps each machine's own clock
(rules/machine.py); this timer moves the gateway's, armed for the next deadline (staleness,
debounce, alert rules), at least once a second.

After a restart the broker first delivers the backlog it kept for our session. The core
applies it at its source times whatever the timer does (each machine's clock resumes at its
last sample); the timer still waits until it is in (``CatchUp``) so that the alert rules and
the collector alerts judge the backlog's events before they judge the wall clock.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence

import structlog

from pilotline.gateway.api.metrics import Metrics
from pilotline.gateway.clock import Clock, SteadyClock
from pilotline.gateway.notify.alerting import Alerting
from pilotline.gateway.service.collectors import Collector
from pilotline.gateway.service.options import ServiceOptions
from pilotline.gateway.service.staged import Staged
from pilotline.rules import Plant

log = structlog.get_logger("pilotline.gateway")


class CatchUp:
    """Has the broker delivered the backlog it kept for our session?

    After a restart, Mosquitto delivers the QoS 1 messages queued while the gateway was away,
    stamped at their source times, before live ones. The core applies them at their own
    times on each machine's clock; the alert rules have one clock, so the timer waits until
    the subscription is confirmed and then either no message came for ``catch_up_quiet_s`` or
    one arrived on time (its source time within ``lateness`` of the clock);
    ``catch_up_max_s`` at the most.
    """

    def __init__(
        self,
        options: ServiceOptions,
        steady: SteadyClock,
        metrics: Metrics,
        *,
        caught_up: bool,
    ) -> None:
        """``caught_up=True``: there is no broker backlog to wait for (no MQTT collector)."""
        self.caught_up = caught_up
        self._options = options
        self._steady = steady
        self._metrics = metrics
        self._began = time.monotonic()
        self._subscribed_at: float | None = None
        self._last_arrival: float | None = None
        self._on_time = False  # a sample arrived within ``lateness`` of its stamp

    def arrived(self, ts_ms: int) -> None:
        """A sample came in (the hot path calls this until caught up). Whether it is on time
        is judged now, at its arrival, not at the next check: a check a little later would
        call a live sample late."""
        self._last_arrival = time.monotonic()
        if ts_ms >= self._steady.now() - self._options.lateness_ms:
            self._on_time = True

    def check(self, subscribed: Callable[[], bool] | None) -> bool:
        """Caught up now? ``subscribed`` tells whether the broker confirmed the subscription
        (None: no MQTT collector, no backlog). Logs ``gateway.caught_up`` when it is."""
        options = self._options
        mono = time.monotonic()
        reason = None
        if mono - self._began >= options.catch_up_max_s:
            reason = "timeout"
        elif subscribed is None:
            reason = "no backlog"
        elif subscribed():
            if self._subscribed_at is None:
                self._subscribed_at = mono
            quiet = options.catch_up_quiet_s
            last = self._last_arrival
            if self._on_time:
                reason = "live"
            elif mono - self._subscribed_at >= quiet and (last is None or mono - last >= quiet):
                reason = "quiet"
        if reason is None:
            return False
        log.info(
            "gateway.caught_up",
            reason=reason,
            after_s=round(mono - self._began, 3),
            samples=sum(self._metrics.samples.values()),
        )
        return True


class RulesTimer:
    def __init__(
        self,
        *,
        catch_up: CatchUp,
        subscribed: Callable[[], bool] | None,
        steady: SteadyClock,
        clock_ms: Clock,
        lateness_ms: int,
        plant: Plant,
        alerting: Alerting,
        collectors: Sequence[Collector],
        advance: Callable[[int], bool],
        stage_alerts: Callable[[], bool],
        staged: Staged,
        request_commit: Callable[[], None],
        alive: Callable[[], None] = lambda: None,
    ) -> None:
        """``advance(now)``: move the core and stage what fired (``Ingest.advance``);
        ``stage_alerts()``: stage what the alert cores emitted (``handlers.AlertOutput``);
        ``alive()``: called on every turn (systemd's watchdog, ``SystemdNotifier.alive``)."""
        self._catch_up = catch_up
        self._subscribed = subscribed
        self._steady = steady
        self._clock_ms = clock_ms
        self._lateness_ms = lateness_ms
        self._plant = plant
        self._alerting = alerting
        self._collectors = collectors
        self._advance = advance
        self._stage_alerts = stage_alerts
        self._staged = staged
        self._request_commit = request_commit
        self._alive = alive

    async def run(self) -> None:
        """Arm one timer for the core's next deadline, on the watermark clock.

        The timer wakes at least once a second: a sample may have brought an earlier deadline,
        and events are stamped at their deadline's time whenever they fire, so a late wake-up
        delays an event without changing it. Each turn tells the watchdog that the loop
        runs: a turn that never ends (an event loop blocked) stops the pings.
        """
        while True:
            delay = self.tick()
            self._alive()
            await asyncio.sleep(delay)

    def tick(self) -> float:
        """One turn: move the core to the watermark (once caught up) and stage what fired;
        returns how long to sleep before the next turn."""
        catch_up = self._catch_up
        if not catch_up.caught_up:
            catch_up.caught_up = catch_up.check(self._subscribed)
            if not catch_up.caught_up:
                return 0.1
        watermark = self._steady.now() - self._lateness_ms
        if self._advance(watermark):
            self._request_commit()
        alerting = self._alerting
        for collector in self._collectors:
            alerting.collector(collector.name, collector.connected, watermark)
        alerting.handle_timer(watermark)
        if self._stage_alerts() or alerting.checkpoints_due(self._clock_ms()):
            self._staged.alert_state = True
            self._request_commit()
        deadlines = [d for d in (self._plant.next_deadline(), alerting.next_deadline()) if d]
        deadline = min(deadlines) if deadlines else None
        delay = 1.0 if deadline is None else max(0.0, (deadline - watermark) / 1000)
        return min(delay, 1.0)
