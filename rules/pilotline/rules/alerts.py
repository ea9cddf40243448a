"""Alert rules over the core's own events: inactive -> pending -> firing -> resolved. No I/O.

Shaped like the plant (and Prometheus' ``alerting.go``): ``observe(events)`` with what the
plant emitted, ``receive(sample)`` for numeric signal rules, ``collector(name, connected,
at_ms)`` for collector health, ``handle_timer(now)``, ``next_deadline()``, ``transitions()``;
``checkpoint()``/``restore()`` carry the current alerts across a restart.

Each (rule, machine) pair -- (rule, collector) for collector rules -- is one *instance* with a
condition that is true or false. When it becomes true the instance is *pending*; once it has
held for the rule's ``for:`` the instance *fires* (an ``AlertTransition`` with
``firing=True``); when it becomes false a firing instance *resolves* (``firing=False``) and a
pending one goes quietly back to inactive. A condition that stays true never fires twice.

Time: a state is known to the alert core when the plant *decided* it
(``StateChanged.decided_ms``: the end of the debounce, or the staleness deadline), not at the
earlier time the state is stamped with. Every input is applied at ``max(its time, now)`` after
the instance deadlines up to that time have fired, and deadlines due at the same millisecond
fire in configuration order (rule, then machine, then collector), so the same input gives the
same transitions in any chunking, as for the plant. The shell advances the plant to an
input's time before giving it here (``plant.receive`` does that for a sample; call
``plant.handle_timer(at_ms)`` and ``observe`` its events before ``collector``).

Rule kinds:

- ``StateCondition``: the machine's confirmed state is ``state`` (``state: down for 2m``);
- ``OfflineCondition``: the machine is ``offline`` (stale). Every machine counts as offline
  from the core's first input until its first state is confirmed, so a machine that never
  reports also alerts;
- ``SignalCondition``: a numeric signal above (or below) a threshold, cleared only once it
  is back below (above) ``clear`` (hysteresis);
- ``CapacityCondition``: an offered idle window that has lasted ``idle_for_ms`` (the ``for:``
  is the window's age, not the time since the condition was seen);
- ``CollectorCondition``: a collector is disconnected (``collector: disconnected``). One
  instance per collector (``Alerts(collectors={machine: collector})``); it applies when any
  of the collector's machines matches the rule's ``machines:``/``zones:``. Its alerts carry
  ``machine=<collector>``, ``zone=<its machines' zone, or "*" if they differ>``, ``owner=""``
  and ``value`` = seconds disconnected. A collector counts as connected until told otherwise.

Inhibition (the condition is evaluated as false, or held, while a cause is in effect; when the
cause ends the condition is evaluated afresh from that moment, so ``for:`` restarts):

- *offline* -> signal rules: do not start or progress (a pending instance goes back to
  inactive); an instance already firing holds until a value clears it;
- *maintenance* (the machine's confirmed state) -> signal, capacity and state rules (not a
  ``state: maintenance`` rule) with ``suppress_in_maintenance`` (the default): they do not
  start, a pending instance goes back to inactive and a firing one *resolves* -- whoever put
  the machine into maintenance has it in hand. A signal rule keeps following its values
  (hysteresis) meanwhile and uses its last answer when maintenance ends;
- *collector disconnected* -> the offline and state rules of its machines: they do not
  start, a pending instance goes back to inactive, a firing one holds (no transition). So a
  collector that drops raises one collector alert, not an ``offline`` alert per machine.
  On reconnect they are evaluated against the machines' states at that moment: a machine
  whose staleness the outage caused is ``offline`` until its first sample's state is
  confirmed, so a held ``down`` alert resolves then and fires again after its ``for:`` if the
  machine is still down; a machine that stays silent fires ``offline`` ``for:`` after the
  reconnect. The shell must report a disconnect before the offline rules' ``for:`` runs out
  (an offline alert already firing holds through the outage).

Checkpoint: ``checkpoint()`` (after draining ``transitions()``) returns plain JSON-able data;
``restore(data)`` on a fresh ``Alerts`` (one that has seen no input) continues exactly where
it left off, including pending deadlines, so a firing alert does not fire again. Instances are
matched by rule name and machine (or collector) name: those of rules, machines and collectors
no longer configured are ignored, new ones start as at the core's first input, and a rule
whose condition changed (other than its ``for:``) starts over (a firing instance of it
resolves at the restore time).

Messages are rendered with ``str.format_map`` over a dict of plain values: ``rule``,
``machine``, ``zone``, ``owner``, ``severity``, ``value``, ``state`` (for a collector alert:
``connected``/``disconnected``), ``status``; no attribute or index access
(``validate_template`` refuses it at load time), no ``eval``.
"""

from __future__ import annotations

import enum
import heapq
import math
import string
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass

from pilotline.rules.errors import RulesConfigError
from pilotline.rules.events import Capacity, Event, StateChanged
from pilotline.rules.sample import Quality, Sample
from pilotline.rules.spec import MachineSpec
from pilotline.rules.states import State

SEVERITIES = ("info", "warning", "critical")

TEMPLATE_FIELDS = frozenset(
    {"rule", "machine", "zone", "owner", "severity", "value", "state", "status"}
)
"""The placeholders a message template may use."""


# -- rules -----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class StateCondition:
    state: State
    for_ms: int = 0


@dataclass(frozen=True, slots=True)
class OfflineCondition:
    for_ms: int = 0


@dataclass(frozen=True, slots=True)
class SignalCondition:
    """``above`` set: true when ``value > above``, false again when ``value < clear``
    (``clear <= above``). ``below`` set: true when ``value < below``, false again when
    ``value > clear`` (``clear >= below``). Between the two, the previous answer holds."""

    signal: str
    above: float | None = None
    below: float | None = None
    clear: float | None = None  # defaults to the threshold itself (no hysteresis)
    for_ms: int = 0


@dataclass(frozen=True, slots=True)
class CapacityCondition:
    """An offered idle window older than ``idle_for_ms``."""

    idle_for_ms: int


@dataclass(frozen=True, slots=True)
class CollectorCondition:
    """The collector is disconnected; one instance per collector, not per machine."""

    for_ms: int = 0


Condition = (
    StateCondition | OfflineCondition | SignalCondition | CapacityCondition | CollectorCondition
)


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    severity: str
    message: str
    condition: Condition
    machines: frozenset[str] | None = None  # None (and zones None): every machine
    zones: frozenset[str] | None = None
    suppress_in_maintenance: bool = True  # see suppressible(): signal, capacity, state rules

    def applies_to(self, machine: str, zone: str) -> bool:
        if self.machines is None and self.zones is None:
            return True
        return (self.machines is not None and machine in self.machines) or (
            self.zones is not None and zone in self.zones
        )


def suppressible(condition: Condition) -> bool:
    """Whether ``suppress_in_maintenance`` applies to rules of this condition."""
    if isinstance(condition, StateCondition):
        return condition.state is not State.MAINTENANCE
    return isinstance(condition, SignalCondition | CapacityCondition)


# -- output ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """``alert``: an instance started firing (``firing``) or resolved (not ``firing``)."""

    rule: str
    machine: str  # for a collector rule: the collector's name
    zone: str  # for a collector rule: its machines' zone, or "*" when they differ
    owner: str  # for a collector rule: ""
    severity: str
    firing: bool
    value: float
    message: str
    ts_ms: int
    since_ms: int  # when the condition became true (for a resolution: of the episode)


class Status(enum.Enum):
    INACTIVE = "inactive"
    PENDING = "pending"
    FIRING = "firing"


@dataclass(frozen=True, slots=True)
class AlertView:
    """One pending or firing instance, for the API."""

    rule: str
    machine: str
    zone: str
    owner: str
    severity: str
    status: Status
    since_ms: int  # condition true since
    firing_since_ms: int | None
    value: float
    message: str


# -- templates -------------------------------------------------------------------------------


def validate_template(template: str) -> None:
    """Raise ``ValueError`` for a template that would not render with ``TEMPLATE_FIELDS``."""
    try:
        parsed = list(string.Formatter().parse(template))
    except ValueError as e:
        raise ValueError(f"message template: {e}") from e
    for _, name, spec, conversion in parsed:
        if name is None:
            continue
        if name not in TEMPLATE_FIELDS:
            allowed = ", ".join(sorted(TEMPLATE_FIELDS))
            raise ValueError(
                f"message template: unknown placeholder {{{name}}} (allowed: {allowed})"
            )
        if conversion is not None and conversion not in "rsa":
            raise ValueError(f"message template: bad conversion !{conversion}")
        if spec and ("{" in spec):
            raise ValueError("message template: nested placeholders are not allowed")
    try:
        template.format_map(_SafeDict(_SAMPLE_VALUES))
    except (ValueError, TypeError) as e:
        raise ValueError(f"message template: {e}") from e


class _SafeDict(dict[str, object]):
    def __missing__(self, key: str) -> str:
        return "{" + key + "}"


_SAMPLE_VALUES: Mapping[str, object] = {
    "rule": "r",
    "machine": "m",
    "zone": "z",
    "owner": "o",
    "severity": "warning",
    "value": 1.5,
    "state": "down",
    "status": "firing",
}


def render(template: str, values: Mapping[str, object]) -> str:
    """``str.format_map`` over plain values; never raises for a validated template."""
    try:
        return template.format_map(_SafeDict(values))
    except (ValueError, TypeError, KeyError, IndexError, AttributeError):
        return template


# -- the core --------------------------------------------------------------------------------

CHECKPOINT_VERSION = 1


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
            _validate(rule)
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
            inst.raw = _hysteresis(cond, float(value), inst.raw)
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
        instances: list[dict[str, object]] = []
        for inst in self._instances.values():
            if inst.status is Status.INACTIVE and not inst.raw and math.isnan(inst.value):
                continue  # the default: nothing to carry
            rule = self._rules[inst.rule]
            instances.append(
                {
                    "rule": rule.name,
                    "target": self._labels(inst)[0],
                    "condition": _fingerprint(rule.condition),
                    "status": inst.status.value,
                    "since": inst.since,
                    "firing_since": inst.firing_since,
                    "value": inst.value if math.isfinite(inst.value) else None,
                    "raw": inst.raw,
                }
            )
        return {
            "version": CHECKPOINT_VERSION,
            "now_ms": self._now,
            "machines": {
                m.id: {
                    "state": m.state.value,
                    "state_since": m.state_since,
                    "window_start": m.window_start,
                }
                for m in self._machines
            },
            "collectors": {c.name: {"connected": c.connected} for c in self._collectors},
            "instances": instances,
        }

    def restore(self, data: Mapping[str, object]) -> None:
        """Continue from ``checkpoint()`` data of an earlier run; call on an ``Alerts`` that
        has seen no input. The machines' states come from the checkpoint (``states`` given
        to ``__init__`` only count for machines it lacks). What no longer matches the
        configuration is ignored (see the module docstring). Transitions it causes (a rule
        whose condition changed) are in ``transitions()``. Raises ``ValueError`` for data that
        is no such checkpoint (and changes nothing then)."""
        if self._now is not None:
            raise RuntimeError("restore() needs an Alerts that has seen no input")
        cp = _parse_checkpoint(data)
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
            if saved_inst.condition != _fingerprint(cond):
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
        # state, offline and collector rules: how long the condition has held, in seconds
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


# -- checkpoints -----------------------------------------------------------------------------


def _fingerprint(cond: Condition) -> str:
    """What an instance's episode depends on, ``for:`` aside (a changed ``for:`` keeps it)."""
    if isinstance(cond, StateCondition):
        return f"state:{cond.state.value}"
    if isinstance(cond, OfflineCondition):
        return "offline"
    if isinstance(cond, CapacityCondition):
        return "capacity"
    if isinstance(cond, CollectorCondition):
        return "collector"
    return f"signal:{cond.signal}:{cond.above!r}:{cond.below!r}:{cond.clear!r}"


@dataclass(frozen=True, slots=True)
class _SavedInstance:
    rule: str
    target: str
    condition: str
    status: Status
    since: int
    firing_since: int | None
    value: float | None
    raw: bool


@dataclass(frozen=True, slots=True)
class _Saved:
    now_ms: int | None
    machines: dict[str, tuple[State, int, int | None]]
    collectors: dict[str, bool]
    instances: list[_SavedInstance]


def _parse_checkpoint(data: Mapping[str, object]) -> _Saved:
    """Check the shape of checkpoint data (it crossed a store); ``ValueError`` if wrong."""
    if not isinstance(data, Mapping) or data.get("version") != CHECKPOINT_VERSION:
        raise ValueError(f"not an alerts checkpoint of version {CHECKPOINT_VERSION}")
    try:
        now = _opt_int(data["now_ms"])
        machines = {
            _str(k): (
                State(_str(_map(m)["state"])),
                _int(_map(m)["state_since"]),
                _opt_int(_map(m)["window_start"]),
            )
            for k, m in _map(data["machines"]).items()
        }
        collectors = {
            _str(k): _bool(_map(c)["connected"]) for k, c in _map(data["collectors"]).items()
        }
        instances = []
        raw_instances = data["instances"]
        if not isinstance(raw_instances, list):
            raise TypeError("instances")
        for item in raw_instances:
            i = _map(item)
            value = i["value"]
            if value is not None and not (
                isinstance(value, int | float) and not isinstance(value, bool)
            ):
                raise TypeError("value")
            status = Status(_str(i["status"]))
            instances.append(
                _SavedInstance(
                    _str(i["rule"]),
                    _str(i["target"]),
                    _str(i["condition"]),
                    status,
                    _int(i["since"]),
                    _opt_int(i["firing_since"]),
                    None if value is None else float(value),
                    _bool(i["raw"]),
                )
            )
    except (KeyError, TypeError, ValueError) as e:
        raise ValueError(f"a malformed alerts checkpoint: {e!r}") from e
    return _Saved(now, machines, collectors, instances)


def _map(x: object) -> Mapping[str, object]:
    if not isinstance(x, Mapping):
        raise TypeError(f"expected a mapping, got {type(x).__name__}")
    return x


def _str(x: object) -> str:
    if not isinstance(x, str):
        raise TypeError(f"expected a string, got {type(x).__name__}")
    return x


def _bool(x: object) -> bool:
    if not isinstance(x, bool):
        raise TypeError(f"expected a boolean, got {type(x).__name__}")
    return x


def _int(x: object) -> int:
    if isinstance(x, bool) or not isinstance(x, int):
        raise TypeError(f"expected an integer, got {type(x).__name__}")
    return x


def _opt_int(x: object) -> int | None:
    return None if x is None else _int(x)


def _hysteresis(cond: SignalCondition, value: float, previous: bool) -> bool:
    if cond.above is not None:
        clear = cond.above if cond.clear is None else cond.clear
        if value > cond.above:
            return True
        if value < clear or (clear == cond.above and value <= clear):
            return False
        return previous
    assert cond.below is not None
    clear = cond.below if cond.clear is None else cond.clear
    if value < cond.below:
        return True
    if value > clear or (clear == cond.below and value >= clear):
        return False
    return previous


def _validate(rule: AlertRule) -> None:
    where = f"alert rule {rule.name!r}"
    if not rule.name:
        raise RulesConfigError("*", "an alert rule has no name")
    if rule.severity not in SEVERITIES:
        raise RulesConfigError("*", f"{where}: severity must be one of {', '.join(SEVERITIES)}")
    try:
        validate_template(rule.message)
    except ValueError as e:
        raise RulesConfigError("*", f"{where}: {e}") from e
    cond = rule.condition
    if isinstance(cond, CapacityCondition):
        if cond.idle_for_ms < 0:
            raise RulesConfigError("*", f"{where}: idle_for must not be negative")
        return
    if cond.for_ms < 0:
        raise RulesConfigError("*", f"{where}: for must not be negative")
    if isinstance(cond, SignalCondition):
        if (cond.above is None) == (cond.below is None):
            raise RulesConfigError("*", f"{where}: give exactly one of above and below")
        limits = [x for x in (cond.above, cond.below, cond.clear) if x is not None]
        if not all(math.isfinite(x) for x in limits):
            raise RulesConfigError("*", f"{where}: thresholds must be finite numbers")
        if cond.clear is not None:
            if cond.above is not None and cond.clear > cond.above:
                raise RulesConfigError("*", f"{where}: clear must not exceed above")
            if cond.below is not None and cond.clear < cond.below:
                raise RulesConfigError("*", f"{where}: clear must not be below below")
