"""The rules core for a whole site: samples and time in, events out. No I/O, no clock.

Shaped like wsproto: ``receive(sample, now)``, ``handle_timer(now)``, ``next_deadline()``,
``events()``. ``now`` is the gateway's clock; it moves only through those arguments, never
through a sample's stamp. Each machine keeps its own clock in its source's time (see
machine.py): a sample moves its own machine only, so one wrong or hostile stamp cannot close
another machine's windows or make it stale. The shell arms one timer for
``next_deadline()`` and calls ``handle_timer`` when it expires.

History (``pilotline replay``, tests) has no gateway clock of its own: ``receive(sample)``
without ``now`` takes the sample's stamp as the gateway's time, so replaying history with no
timer calls at all gives the same events as a live run.

Deadlines live in a heap of ``(gateway time, index)`` entries, at most one *current* entry
per machine (``_scheduled``); a machine's deadline in its own time is due on the gateway's
clock ``lag_ms`` later. Entries made obsolete by newer samples are skipped when they pop.
Entries that fall due at the same millisecond fire in configuration order, and the zone
report (index past the last machine) after every machine, so the order of events never
depends on how the input was chunked.
"""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable
from dataclasses import dataclass

from pilotline.rules.errors import RulesConfigError
from pilotline.rules.events import Event, SampleRejected, ZoneCapacity
from pilotline.rules.machine import NEVER, Checkpoint, MachineTracker
from pilotline.rules.sample import Sample
from pilotline.rules.spec import MachineSpec, MappedState, PlantSpec, ThresholdState
from pilotline.rules.states import State

ALL_CAPABILITIES = "all"
"""The ``capability`` tag of the zone-wide row of ``zone_capacity``."""


@dataclass(frozen=True, slots=True)
class MachineView:
    """A read-only snapshot of one machine for the API and the demo."""

    id: str
    zone: str
    owner: str
    capabilities: tuple[str, ...]
    state: State
    since_ms: int | None
    pending: State | None
    last_seen_ms: int | None
    window_start_ms: int | None
    available: bool
    idle_for_s: float
    offered: bool = False
    offered_until_ms: int | None = None  # end of the policy's allowed span (None: open-ended)
    lag_ms: int = 0  # how far this machine's data runs behind the gateway's clock


class Plant:
    def __init__(self, spec: PlantSpec) -> None:
        seen: set[str] = set()
        for machine in spec.machines:
            _validate(machine)
            if machine.id in seen:
                raise RulesConfigError(machine.id, "configured twice")
            seen.add(machine.id)
        if spec.publish_interval_ms <= 0:
            raise RulesConfigError("*", "publish_interval_ms must be positive")
        self._spec = spec
        self._machines = [MachineTracker(m) for m in spec.machines]
        self._index = {m.id: i for i, m in enumerate(spec.machines)}
        self._trackers = {m.id: t for m, t in zip(spec.machines, self._machines, strict=True)}
        self._zone_slot = len(self._machines)
        self._zones = _zone_groups(spec.machines)
        self._heap: list[tuple[float, int]] = []
        self._next_due: float = -NEVER  # at most the heap's earliest time
        self._scheduled: list[float] = [NEVER] * (len(self._machines) + 1)
        self._now: int | None = None
        self._next_zone_tick: float = NEVER
        self._events: list[Event] = []

    # -- input -----------------------------------------------------------------------------

    def receive(self, sample: Sample, now_ms: int | None = None) -> None:
        """``sample`` arrived when the gateway's clock read ``now_ms``; without it (history),
        the sample's own stamp is the gateway's time."""
        tracker = self._trackers.get(sample.machine)
        if tracker is None:  # moves no clock, not even in history
            self._events.append(
                SampleRejected(sample.machine, sample.ts_ms, "unknown_machine", "not configured")
            )
            return
        if now_ms is None:
            now_ms = sample.ts_ms if self._now is None else max(self._now, sample.ts_ms)
        if self._now is None or now_ms >= self._next_due:
            self._advance(now_ms)  # deadlines fall due first
        elif now_ms > self._now:
            self._now = now_ms  # nothing falls due: just the clock
        assert self._now is not None
        if tracker.receive(sample, self._now, self._events):
            index = self._index[sample.machine]
            self._reschedule(index, tracker)

    def receive_many(self, samples: Iterable[Sample]) -> None:
        """History: each sample's stamp is the gateway's time."""
        for sample in samples:
            self.receive(sample)

    def handle_timer(self, now_ms: int) -> None:
        self._advance(now_ms)

    def next_deadline(self) -> int | None:
        heap = self._heap
        while heap and heap[0][0] != self._scheduled[heap[0][1]]:
            heapq.heappop(heap)
        return int(heap[0][0]) if heap else None

    def events(self) -> list[Event]:
        """The events produced since the last call, in order."""
        events, self._events = self._events, []
        return events

    # -- restart ---------------------------------------------------------------------------

    def checkpoint(self, machine: str) -> Checkpoint | None:
        """What ``restore`` needs to resume ``machine`` (None: not configured)."""
        index = self._index.get(machine)
        return None if index is None else self._machines[index].checkpoint()

    def restore(self, cp: Checkpoint) -> bool:
        """Resume one machine from a checkpoint taken by an earlier run (the shell keeps them
        in its store); call before its first sample. Its pending debounce, staleness and
        window deadlines are then due at their original times: a machine silent for longer
        than ``stale_after`` goes ``offline`` at its last sample as soon as time passes that.
        Returns False (and changes nothing) for a machine no longer configured."""
        index = self._index.get(cp.machine)
        if index is None:
            return False
        tracker = self._machines[index]
        tracker.restore(cp)
        if self._now is not None:
            tracker.start(self._now)
            self._reschedule(index, tracker)
        return True

    # -- views -----------------------------------------------------------------------------

    @property
    def now_ms(self) -> int | None:
        return self._now

    def view(self) -> list[MachineView]:
        now = self._now or 0
        views = []
        for t in self._machines:
            clock = t.clock_at(now)
            views.append(
                MachineView(
                    t.spec.id,
                    t.spec.zone,
                    t.spec.owner,
                    t.spec.capabilities,
                    t.state,
                    t.since_ms,
                    t.pending,
                    t.last_seen_ms,
                    t.window_start_ms,
                    t.available,
                    t.idle_for_ms(clock) / 1000.0,
                    t.offered,
                    t.spec.policy.span(clock).end_ms if t.offered else None,
                    t.lag_ms,
                )
            )
        return views

    # -- time ------------------------------------------------------------------------------

    def _advance(self, now_ms: int) -> None:
        if self._now is None:
            self._now = now_ms
            for index, tracker in enumerate(self._machines):
                tracker.start(now_ms)
                self._reschedule(index, tracker)
            interval = self._spec.publish_interval_ms
            self._next_zone_tick = (now_ms // interval + 1) * interval
            self._schedule(self._zone_slot, self._next_zone_tick)
        elif now_ms < self._now:
            return
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            at, index = heapq.heappop(heap)
            if at != self._scheduled[index]:
                continue  # superseded by an earlier entry that already fired
            self._scheduled[index] = NEVER
            at_ms = int(at)
            if index == self._zone_slot:
                self._report_zones(at_ms)
                interval = self._spec.publish_interval_ms
                self._next_zone_tick = at_ms + interval
                self._schedule(index, self._next_zone_tick)
            else:
                tracker = self._machines[index]
                tracker.fire(at_ms - tracker.lag_ms, self._events)
                self._reschedule(index, tracker)
        self._now = now_ms
        self._next_due = heap[0][0] if heap else NEVER

    def _reschedule(self, index: int, tracker: MachineTracker) -> None:
        self._schedule(index, tracker.next_deadline() + tracker.lag_ms)

    def _schedule(self, index: int, deadline: float) -> None:
        # A later deadline keeps the earlier entry: it pops early, finds nothing due and
        # reschedules, which is cheaper than removing it from the heap.
        if deadline < self._scheduled[index]:
            self._scheduled[index] = deadline
            heapq.heappush(self._heap, (deadline, index))
            self._next_due = min(self._next_due, deadline)

    def _report_zones(self, now_ms: int) -> None:
        for (zone, capability), members in self._zones:
            counts = {State.RUNNING: 0, State.DOWN: 0, State.OFFLINE: 0}
            available = 0
            for index in members:
                tracker = self._machines[index]
                if tracker.state in counts:
                    counts[tracker.state] += 1
                available += tracker.available
            self._events.append(
                ZoneCapacity(
                    zone,
                    capability,
                    now_ms,
                    len(members),
                    available,
                    counts[State.RUNNING],
                    counts[State.DOWN],
                    counts[State.OFFLINE],
                )
            )


def _validate(machine: MachineSpec) -> None:
    rule = machine.state
    if isinstance(rule, ThresholdState):
        if not (math.isfinite(rule.running_above) and math.isfinite(rule.idle_below)):
            raise RulesConfigError(machine.id, "thresholds must be finite numbers")
        if rule.idle_below > rule.running_above:
            raise RulesConfigError(machine.id, "idle_below must not exceed running_above")
    elif isinstance(rule, MappedState) and not rule.mapping:
        raise RulesConfigError(machine.id, "the state map is empty")
    for name in ("debounce_ms", "stale_after_ms", "min_idle_ms"):
        if getattr(machine, name) < 0:
            raise RulesConfigError(machine.id, f"{name} must not be negative")
    for name in ("stale_after_ms", "publish_interval_ms"):
        if getattr(machine, name) <= 0:
            raise RulesConfigError(machine.id, f"{name} must be positive")


def _zone_groups(machines: tuple[MachineSpec, ...]) -> list[tuple[tuple[str, str], list[int]]]:
    groups: dict[tuple[str, str], list[int]] = {}
    for index, machine in enumerate(machines):
        groups.setdefault((machine.zone, ALL_CAPABILITIES), []).append(index)
        for capability in machine.capabilities:
            groups.setdefault((machine.zone, capability), []).append(index)
    return sorted(groups.items())
