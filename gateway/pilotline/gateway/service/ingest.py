"""The way in: samples, refused inputs and computed points, staged for the next commit.

``Ingest.sample`` is the hot path. The collectors call it synchronously in the event loop
(replay and tests call it too), so it stays lean: count the sample, stage its telemetry
point, feed the rules and the alert rules, stage what the rules emitted (through the event
handlers) and ask for a commit. A sample's MQTT acknowledgement waits in the batch until the
commit has made everything it caused durable.

Every sample reaches the core with the gateway's clock (the watermark, ``wall clock -
lateness``), read once per batch: the core moves each machine's clock by its own samples
only. A sample stamped further ahead of the gateway's wall clock than its machine's
``max_skew_s`` is refused as ``future`` (a wrong or forged clock must not decide anything
ahead of time) and its source reported (``Metrics.future``), while its later honest samples
are accepted. One older than what the previous run applied, delivered again by the broker,
has its telemetry rewritten and nothing else.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.api.metrics import Metrics
from pilotline.gateway.clock import SteadyClock
from pilotline.gateway.notify.alerting import Alerting
from pilotline.gateway.service.collectors import Refused
from pilotline.gateway.service.staged import Staged
from pilotline.gateway.service.timer import CatchUp
from pilotline.gateway.sinks.influx.points import PRIORITY_TELEMETRY, telemetry_line
from pilotline.gateway.store import QuarantineRow
from pilotline.rules import Event, Plant, Sample, SampleRejected


class Ingest:
    def __init__(
        self,
        *,
        staged: Staged,
        plant: Plant,
        alerting: Alerting,
        metrics: Metrics,
        steady: SteadyClock,
        catch_up: CatchUp,
        stage_events: Callable[[Sequence[Event]], None],
        request_commit: Callable[[], None],
        zone_of: Mapping[str, str],
        site: str,
        telemetry: bool,
        lateness_ms: int,
        max_skew_ms: Mapping[str, int],
        redelivery_below: Mapping[str, int],
    ) -> None:
        """``telemetry``: stage a ``telemetry`` point per sample. ``max_skew_ms``: per machine,
        how far its stamps may run ahead of the wall clock. ``redelivery_below``: per
        machine, the source time of the last sample the previous run applied."""
        self._staged = staged
        self._plant = plant
        self._alerting = alerting
        self._metrics = metrics
        self._steady = steady
        self._catch_up = catch_up
        self._stage_events = stage_events
        self._request_commit = request_commit
        self._zone_of = zone_of
        self._site = site
        self._telemetry = telemetry
        self._lateness_ms = lateness_ms
        self._max_skew_ms = max_skew_ms
        self._min_skew_ms = min(max_skew_ms.values(), default=0)
        self._redelivery_below = redelivery_below

    def sample(self, sample: Sample, ack: AckToken | None = None) -> None:
        """A sample from a collector; ``ack`` is sent once what it caused is durable."""
        staged = self._staged
        if ack is not None:
            staged.acks.append(ack)
            resumed = self._redelivery_below.get(sample.machine)
            if resumed is not None and sample.ts_ms < resumed:
                # Older than what the previous run applied: a message it made durable but
                # could not acknowledge, delivered again. Its telemetry is rewritten (the
                # same point, harmless); the rules have it already.
                self._metrics.rejected[("rules", "duplicate")] += 1
                self._stage_telemetry(sample)
                self._request_commit()
                return
        catch_up = self._catch_up
        if not catch_up.caught_up:
            catch_up.arrived(sample.ts_ms)
        now = staged.arrival_ms
        if now is None or sample.ts_ms > staged.future_floor:
            # The clocks are read (and a step of the wall clock noticed) for the first sample
            # after each commit, or one beyond the bound: the time saved per sample is
            # measured in benchmarks/README.md.
            now = self._read_clocks()
        if sample.ts_ms <= staged.future_floor or not self._ahead(sample):
            self._metrics.samples[sample.machine] += 1
            self._stage_telemetry(sample)
            plant = self._plant
            plant.receive(sample, now)
            events = plant.events()
            if events:
                self._stage_events(events)
            # Alert transitions are collected once per commit (``commit``), not per sample.
            self._alerting.receive(sample)
            if sample.machine in self._zone_of:
                staged.touched.add(sample.machine)
                if self._steady.stepped:
                    self._steady.observe(sample.ts_ms)
        self._request_commit()

    def history(self, sample: Sample) -> None:
        """A value its source flagged as history (Sparkplug ``is_historical``: stored late by
        an edge node, sent after a reconnect): its ``telemetry`` point at its own time, and
        nothing else. It never reaches the rules (the live state, windows, capacity and
        alerts are about now, and a value from the past would move a machine's clock
        backwards), so it is not counted as a sample. A value stamped in the future is no
        history: refused as ``future``, as a live sample would be. Without ``influx:`` there
        is no telemetry, and it is dropped."""
        staged = self._staged
        if staged.arrival_ms is None or sample.ts_ms > staged.future_floor:
            self._read_clocks()
        if sample.ts_ms <= staged.future_floor or not self._ahead(sample):
            self._stage_telemetry(sample)
        self._request_commit()

    def _read_clocks(self) -> int:
        """Read the gateway's clock and the bound of what is too far ahead (``future``)
        into the staged batch; returns the clock (the arrival time of what follows)."""
        staged = self._staged
        now = staged.arrival_ms = self._steady.now() - self._lateness_ms
        staged.future_base = self._steady.future_limit_base()
        staged.future_floor = staged.future_base + self._min_skew_ms
        return now

    def _ahead(self, sample: Sample) -> bool:
        """Refuse (quarantine as ``future``) a sample stamped further ahead of the wall clock
        than its machine's skew; the source is reported, its later samples still count."""
        base = self._staged.future_base
        ahead = sample.ts_ms - base
        if ahead <= self._max_skew_ms.get(sample.machine, self._min_skew_ms):
            return False
        metrics = self._metrics
        metrics.future[sample.machine] += 1
        metrics.ahead[sample.machine] = (ahead, base)
        self._stage_events(
            [
                SampleRejected(
                    sample.machine,
                    sample.ts_ms,
                    "future",
                    f"{ahead / 1000:.3f} s ahead of the gateway clock",
                )
            ]
        )
        return True

    def _stage_telemetry(self, sample: Sample) -> None:
        if self._telemetry:
            zone = self._zone_of.get(sample.machine)
            if zone is not None:
                line = telemetry_line(
                    self._site, zone, sample.machine, sample.values, sample.ts_ms
                )
                if line is not None:
                    self._staged.lines.append((PRIORITY_TELEMETRY, line))

    def reject(self, source: str, item: Refused, ack: AckToken | None = None) -> None:
        """An input ``source`` (``mqtt``, ``opcua``) refused: counted and quarantined."""
        self._metrics.rejected[(source, item.reason)] += 1
        self._staged.quarantined.append(
            QuarantineRow(item.arrival_ms, source, item.topic, item.machine, item.reason, item.head)
        )
        if ack is not None:
            self._staged.acks.append(ack)
        self._request_commit()

    def events(self, events: Sequence[Event]) -> None:
        """Events of the rules core, through the event handlers (handlers.py)."""
        self._stage_events(events)

    def advance(self, now_ms: int) -> bool:
        """Move the rules core's time to ``now_ms`` without a sample (the rules timer, replay)
        and stage what fired; True if anything did."""
        plant = self._plant
        plant.handle_timer(now_ms)
        events = plant.events()
        if events:
            self._stage_events(events)
        return bool(events)

    def lines(self, lines: list[tuple[int, str]]) -> None:
        """Points computed outside the sample path (forecasts) join a commit."""
        self._staged.lines.extend(lines)
        self._request_commit()
