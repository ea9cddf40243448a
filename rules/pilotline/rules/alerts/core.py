"""The alert core: one instance per (rule, machine) or (rule, collector), driven by the
plant's events, numeric samples, collector health and deadlines; every change of an
instance's status goes through ``_set``. The package docstring (``alerts/__init__.py``) is its
theory of operation."""

from __future__ import annotations

import heapq
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pilotline.rules.alerts.checkpoint import Saved, SavedInstance, from_json, to_json
from pilotline.rules.alerts.conditions import (
    AlertRule,
    CapacityCondition,
    CollectorCondition,
    InterlockCondition,
    OfflineCondition,
    SignalCondition,
    fingerprint,
    hysteresis,
    suppressible,
    validate_rule,
)
from pilotline.rules.alerts.templates import render
from pilotline.rules.alerts.transitions import AlertTransition, AlertView, Status
from pilotline.rules.errors import RulesConfigError
from pilotline.rules.events import Capacity, Event, StateChanged
from pilotline.rules.sample import Quality, Sample
from pilotline.rules.spec import MachineSpec
from pilotline.rules.states import State


class _Instance:
    __slots__ = (
        "deadline",
        "firing_since",
        "raw",
        "rule",
        "since",
        "status",
        "target",
        "value",
    )

    def __init__(self, rule: int, target: int) -> None:
        self.rule = rule
        self.target = target  # a machine's index, or len(machines) + a collector's index
        self.status = Status.INACTIVE
        self.since = 0
        self.firing_since: int | None = None
        self.value = math.nan
        self.raw = False  # signal rules: the hysteresis answer, before inhibition
        self.deadline: float = math.inf


@dataclass(slots=True)
class _Machine:
    id: str
    zone: str
    owner: str
    state: State = State.OFFLINE
    state_since: int = 0
    window_start: int | None = None  # of the offered window, while offered
    collector: int | None = None  # index into Alerts._collectors
    interlock_unknown: bool = False  # its soft interlock does not read back


@dataclass(slots=True)
class _Collector:
    name: str
    machines: list[int]
    zone: str = "*"  # its machines' zone when they share one
    connected: bool = True


class Alerts:
    def __init__(
        self,
        rules: Sequence[AlertRule],
        machines: Sequence[MachineSpec],
        *,
        states: Mapping[str, State] | None = None,
        collectors: Mapping[str, str] | None = None,
    ) -> None:
        """``states``: each machine's confirmed state to start from (a plant restored after a
        restart emits no ``StateChanged`` for it); ``offline`` when not given.
        ``collectors``: machine id -> the name of the collector that reads it (machines
        without one have no collector: only their own staleness tells)."""
        names: set[str] = set()
        for rule in rules:
            validate_rule(rule)
            if rule.name in names:
                raise RulesConfigError("*", f"alert rule {rule.name!r} configured twice")
            names.add(rule.name)
        self._rules = tuple(rules)
        self._rule_index = {rule.name: r for r, rule in enumerate(self._rules)}
        start = states or {}
        self._machines = [
            _Machine(m.id, m.zone, m.owner, start.get(m.id, State.OFFLINE)) for m in machines
        ]
        self._index = {m.id: i for i, m in enumerate(machines)}
        self._collectors: list[_Collector] = []
        self._collector_index: dict[str, int] = {}
        served_by = collectors or {}
        for machine_id, collector_name in served_by.items():
            if machine_id not in self._index:
                raise RulesConfigError(machine_id, "has a collector but is not configured")
            if not collector_name:
                raise RulesConfigError(machine_id, "the collector has no name")
        for i, machine in enumerate(self._machines):  # collectors in configuration order
            served = served_by.get(machine.id)
            if served is None:
                continue
            c = self._collector_index.setdefault(served, len(self._collectors))
            if c == len(self._collectors):
                self._collectors.append(_Collector(served, [], machine.zone))
            collector = self._collectors[c]
            collector.machines.append(i)
            if collector.zone != machine.zone:
                collector.zone = "*"
            machine.collector = c
        base = len(self._machines)
        # instances of each target (machines, then collectors), in rule order
        self._instances: dict[tuple[int, int], _Instance] = {}
        self._by_target: list[list[_Instance]] = [[] for _ in range(base + len(self._collectors))]
        for r, rule in enumerate(self._rules):
            if isinstance(rule.condition, CollectorCondition):
                targets = [
                    base + c
                    for c, col in enumerate(self._collectors)
                    if any(self._applies(rule, i) for i in col.machines)
                ]
            else:
                targets = [i for i in range(base) if self._applies(rule, i)]
            for t in targets:
                inst = _Instance(r, t)
                self._instances[(r, t)] = inst
                self._by_target[t].append(inst)
        self._heap: list[tuple[float, int, int]] = []
        self._now: int | None = None
        self._out: list[AlertTransition] = []

    def _applies(self, rule: AlertRule, index: int) -> bool:
        machine = self._machines[index]
        return rule.applies_to(machine.id, machine.zone)

    # -- input -----------------------------------------------------------------------------

    def observe(self, events: Iterable[Event]) -> None:
        """The plant's events, in the order it emitted them."""
        for event in events:
            if isinstance(event, StateChanged):
                index = self._index.get(event.machine)
                if index is not None:
                    at = self._advance(max(event.ts_ms, event.decided_ms))
                    self._state(index, event.state, at)
            elif isinstance(event, Capacity):
                index = self._index.get(event.machine)
                if index is not None:
                    at = self._advance(event.ts_ms)
                    self._capacity(index, event, at)

    def receive(self, sample: Sample) -> None:
        """A sample's numeric values, for signal rules (call after the plant's receive)."""
        index = self._index.get(sample.machine)
        if index is None or sample.quality is Quality.BAD:
            return
        at = self._advance(sample.ts_ms)
        for inst in self._by_target[index]:
            cond = self._rules[inst.rule].condition
            if not isinstance(cond, SignalCondition):
                continue
            value = sample.values.get(cond.signal)
            if value is None or isinstance(value, str) or not math.isfinite(value):
                continue
            inst.raw = hysteresis(cond, float(value), inst.raw)
            inst.value = float(value)
            self._evaluate(inst, at)

    def collector(self, name: str, connected: bool, at_ms: int) -> None:
        """A collector (dis)connected at ``at_ms`` (call after advancing the plant to
        ``at_ms`` and observing its events). Unknown names are ignored."""
        c = self._collector_index.get(name)
        if c is None:
            return
        at = self._advance(at_ms)
        collector = self._collectors[c]
        if collector.connected == connected:
            return
        collector.connected = connected
        for inst in self._by_target[len(self._machines) + c]:
            self._evaluate(inst, at)
        for index in collector.machines:
            for inst in self._by_target[index]:
                self._evaluate(inst, at)

    def interlock(self, machine: str, unknown: bool, at_ms: int) -> None:
        """A machine's soft interlock stopped (``unknown``) or started again to read back at
        ``at_ms`` (call as for ``collector``). Unknown machines are ignored."""
        index = self._index.get(machine)
        if index is None:
            return
        at = self._advance(at_ms)
        m = self._machines[index]
        if m.interlock_unknown == unknown:
            return
        m.interlock_unknown = unknown
        for inst in self._by_target[index]:
            if isinstance(self._rules[inst.rule].condition, InterlockCondition):
                self._evaluate(inst, at)

    def handle_timer(self, now_ms: int) -> None:
        self._advance(now_ms)

    def next_deadline(self) -> int | None:
        heap = self._heap
        while heap and heap[0][0] != self._instances[(heap[0][1], heap[0][2])].deadline:
            heapq.heappop(heap)
        return int(heap[0][0]) if heap else None

    def transitions(self) -> list[AlertTransition]:
        """The transitions since the last call, in order."""
        out, self._out = self._out, []
        return out

    # -- views -----------------------------------------------------------------------------

    @property
    def now_ms(self) -> int | None:
        return self._now

    def rules(self) -> tuple[AlertRule, ...]:
        return self._rules

    def view(self) -> list[AlertView]:
        """Pending and firing instances, in configuration order."""
        out = []
        for inst in self._instances.values():
            if inst.status is Status.INACTIVE:
                continue
            rule = self._rules[inst.rule]
            name, zone, owner, _ = self._labels(inst)
            value = self._value(inst, self._now or inst.since)
            out.append(
                AlertView(
                    rule.name,
                    name,
                    zone,
                    owner,
                    rule.severity,
                    inst.status,
                    inst.since,
                    inst.firing_since,
                    value,
                    self._message(inst, value, inst.status),
                )
            )
        return out

    # -- restart ---------------------------------------------------------------------------

    def checkpoint(self) -> dict[str, object]:
        """Everything ``restore`` needs, as plain JSON-able data. Take it after draining
        ``transitions()`` (undrained transitions are not part of it)."""
        instances: list[SavedInstance] = []
        for inst in self._instances.values():
            if inst.status is Status.INACTIVE and not inst.raw and math.isnan(inst.value):
                continue  # the default: nothing to carry
            rule = self._rules[inst.rule]
            instances.append(
                SavedInstance(
                    rule.name,
                    self._labels(inst)[0],
                    fingerprint(rule.condition),
                    inst.status,
                    inst.since,
                    inst.firing_since,
                    inst.value if math.isfinite(inst.value) else None,
                    inst.raw,
                )
            )
        return to_json(
            Saved(
                self._now,
                {m.id: (m.state, m.state_since, m.window_start) for m in self._machines},
                {c.name: c.connected for c in self._collectors},
                instances,
                sorted(m.id for m in self._machines if m.interlock_unknown),
            )
        )

    def restore(self, data: Mapping[str, object]) -> None:
        """Continue from ``checkpoint()`` data of an earlier run; call on an ``Alerts`` that
        has seen no input. The machines' states come from the checkpoint (``states`` given
        to ``__init__`` only count for machines it lacks). What no longer matches the
        configuration is ignored (see the package docstring). Transitions it causes (a rule
        whose condition changed) are in ``transitions()``. Raises ``ValueError`` for data that
        is no such checkpoint (and changes nothing then)."""
        if self._now is not None:
            raise RuntimeError("restore() needs an Alerts that has seen no input")
        cp = from_json(data)
        now = cp.now_ms
        base = len(self._machines)
        for machine in self._machines:
            saved = cp.machines.get(machine.id)
            if saved is not None:
                machine.state, machine.state_since, machine.window_start = saved
            elif now is not None:
                machine.state_since = now  # new since: as at the first input
        for collector in self._collectors:
            collector.connected = cp.collectors.get(collector.name, True)
        unknown = set(cp.interlocks)
        for machine in self._machines:
            machine.interlock_unknown = machine.id in unknown
        self._now = now
        if now is None:
            return  # no input yet: the first one starts everything
        restarted: list[_Instance] = []
        for saved_inst in cp.instances:
            r = self._rule_index.get(saved_inst.rule)
            if r is None:
                continue
            cond = self._rules[r].condition
            if isinstance(cond, CollectorCondition):
                c = self._collector_index.get(saved_inst.target)
                t = None if c is None else base + c
            else:
                t = self._index.get(saved_inst.target)
            inst = None if t is None else self._instances.get((r, t))
            if inst is None:
                continue
            inst.status = saved_inst.status
            inst.since = saved_inst.since
            inst.firing_since = saved_inst.firing_since if inst.status is Status.FIRING else None
            inst.value = math.nan if saved_inst.value is None else saved_inst.value
            inst.raw = saved_inst.raw
            if saved_inst.condition != fingerprint(cond):
                restarted.append(inst)
        for inst in restarted:  # the rule changed: this episode is over, start afresh
            self._set(inst, False, now)
            inst.raw = False
            inst.value = math.nan
        for inst in self._instances.values():
            if inst.status is Status.PENDING:
                due = self._due(inst)
                if due <= now:
                    self._fire(inst, now)
                else:
                    self._schedule(inst, due)
        for targets in self._by_target:
            for inst in targets:
                self._evaluate(inst, now)

    # -- time ------------------------------------------------------------------------------

    def _advance(self, now_ms: int) -> int:
        """Fire every deadline up to ``now_ms``; return the time input is applied at."""
        if self._now is None:
            self._now = now_ms
            for machine in self._machines:
                machine.state_since = now_ms
            for targets in self._by_target:
                for inst in targets:
                    self._evaluate(inst, now_ms)
        if now_ms < self._now:
            return self._now
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            at, r, t = heapq.heappop(heap)
            inst = self._instances[(r, t)]
            if at != inst.deadline:
                continue
            inst.deadline = math.inf
            if inst.status is Status.PENDING:
                self._fire(inst, int(at))
        self._now = now_ms
        return now_ms

    def _schedule(self, inst: _Instance, at: int) -> None:
        inst.deadline = at
        heapq.heappush(self._heap, (at, inst.rule, inst.target))

    # -- conditions --------------------------------------------------------------------------

    def _state(self, index: int, state: State, at: int) -> None:
        machine = self._machines[index]
        machine.state = state
        machine.state_since = at
        for inst in self._by_target[index]:
            self._evaluate(inst, at)

    def _capacity(self, index: int, event: Capacity, at: int) -> None:
        machine = self._machines[index]
        if event.offered:
            if machine.window_start is None:
                machine.window_start = event.ts_ms - round(event.idle_for_s * 1000)
        else:
            machine.window_start = None
        for inst in self._by_target[index]:
            if isinstance(self._rules[inst.rule].condition, CapacityCondition):
                self._evaluate(inst, at)

    def _evaluate(self, inst: _Instance, at: int) -> None:
        """Bring ``inst`` in line with its condition and inhibitions at ``at``. Every input
        calls it for the instances it may affect; it changes nothing for the others, which is
        what lets ``restore`` and the first input call it for every instance."""
        rule = self._rules[inst.rule]
        cond = rule.condition
        if isinstance(cond, CollectorCondition):
            collector = self._collectors[inst.target - len(self._machines)]
            self._set(inst, not collector.connected, at)
            return
        machine = self._machines[inst.target]
        if (
            machine.state is State.MAINTENANCE
            and rule.suppress_in_maintenance
            and suppressible(cond)
        ):
            self._set(inst, False, at)  # suppressed: a firing instance resolves
            return
        if isinstance(cond, SignalCondition):
            offline = machine.state is State.OFFLINE
            if offline and inst.status is Status.FIRING:
                return  # inhibited: holds until a value clears it
            self._set(inst, inst.raw and not offline, at)
        elif isinstance(cond, CapacityCondition):
            self._set(inst, machine.window_start is not None, at)
        elif isinstance(cond, InterlockCondition):
            self._set(inst, machine.interlock_unknown, at)
        else:
            c = machine.collector
            if c is not None and not self._collectors[c].connected:
                if inst.status is not Status.FIRING:  # inhibited; a firing instance holds
                    self._set(inst, False, at)
                return
            wanted = State.OFFLINE if isinstance(cond, OfflineCondition) else cond.state
            self._set(inst, machine.state is wanted, at)

    # -- the lifecycle ---------------------------------------------------------------------

    def _set(self, inst: _Instance, active: bool, at: int) -> None:
        if active:
            if inst.status is not Status.INACTIVE:
                return
            inst.status = Status.PENDING
            inst.since = at
            due = max(at, self._due(inst))
            if due <= at:
                self._fire(inst, at)
            else:
                self._schedule(inst, due)
            return
        if inst.status is Status.FIRING:
            value = self._value(inst, at)
            self._emit(inst, False, value, at)
        inst.status = Status.INACTIVE
        inst.firing_since = None
        inst.deadline = math.inf

    def _due(self, inst: _Instance) -> int:
        cond = self._rules[inst.rule].condition
        if isinstance(cond, CapacityCondition):
            start = self._machines[inst.target].window_start
            return (start if start is not None else inst.since) + cond.idle_for_ms
        return inst.since + cond.for_ms

    def _fire(self, inst: _Instance, at: int) -> None:
        inst.status = Status.FIRING
        inst.firing_since = at
        inst.deadline = math.inf
        self._emit(inst, True, self._value(inst, at), at)

    def _value(self, inst: _Instance, at: int) -> float:
        cond = self._rules[inst.rule].condition
        if isinstance(cond, SignalCondition):
            return inst.value
        if isinstance(cond, CapacityCondition):
            start = self._machines[inst.target].window_start
            return 0.0 if start is None else max(0, at - start) / 1000.0
        # state, offline, collector and interlock rules: how long the condition has held, in seconds
        return max(0, at - inst.since) / 1000.0

    def _labels(self, inst: _Instance) -> tuple[str, str, str, str]:
        """machine (or collector name), zone, owner and the ``state`` placeholder."""
        base = len(self._machines)
        if inst.target < base:
            m = self._machines[inst.target]
            return m.id, m.zone, m.owner, m.state.value
        c = self._collectors[inst.target - base]
        return c.name, c.zone, "", "connected" if c.connected else "disconnected"

    def _emit(self, inst: _Instance, firing: bool, value: float, at: int) -> None:
        rule = self._rules[inst.rule]
        name, zone, owner, _ = self._labels(inst)
        status = Status.FIRING if firing else Status.INACTIVE
        self._out.append(
            AlertTransition(
                rule.name,
                name,
                zone,
                owner,
                rule.severity,
                firing,
                value,
                self._message(inst, value, status),
                at,
                inst.since,
            )
        )

    def _message(self, inst: _Instance, value: float, status: Status) -> str:
        rule = self._rules[inst.rule]
        name, zone, owner, state = self._labels(inst)
        return render(
            rule.message,
            {
                "rule": rule.name,
                "machine": name,
                "zone": zone,
                "owner": owner,
                "severity": rule.severity,
                "value": value,
                "state": state,
                "status": "firing"
                if status is Status.FIRING
                else ("pending" if status is Status.PENDING else "resolved"),
            },
        )
