"""Alert rules over the core's own events: inactive -> pending -> firing -> resolved. No I/O.

Shaped like the plant (and Prometheus' ``alerting.go``): ``observe(events)`` with what the
plant emitted, ``receive(sample)`` for numeric signal rules, ``handle_timer(now)``,
``next_deadline()``, ``transitions()``.

Each (rule, machine) pair is one *instance* with a condition that is true or false. When it
becomes true the instance is *pending*; once it has held for the rule's ``for:`` the
instance *fires* (an ``AlertTransition`` with ``firing=True``); when it becomes false a
firing instance *resolves* (``firing=False``) and a pending one goes quietly back to
inactive. A condition that stays true never fires twice.

Time: a state is known to the alert core when the plant *decided* it
(``StateChanged.decided_ms``: the end of the debounce, or the staleness deadline), not at the
earlier time the state is stamped with. Every input is applied at ``max(its time, now)`` after
the instance deadlines up to that time have fired, and deadlines due at the same millisecond
fire in configuration order (rule, then machine), so the same input gives the same
transitions in any chunking, as for the plant.

Rule kinds:

- ``StateCondition``: the machine's confirmed state is ``state`` (``state: down for 2m``);
- ``OfflineCondition``: the machine is ``offline`` (stale, or its collector disconnected).
  Every machine counts as offline from the core's first input until its first state is
  confirmed, so a machine that never reports also alerts;
- ``SignalCondition``: a numeric signal above (or below) a threshold, cleared only once it
  is back below (above) ``clear`` (hysteresis). *Inhibition*: while the machine is
  ``offline`` a signal condition does not start or progress (a pending instance goes back
  to inactive); an instance already firing holds until a value clears it;
- ``CapacityCondition``: an offered idle window that has lasted ``idle_for_ms`` (the ``for:``
  is the window's age, not the time since the condition was seen).

Messages are rendered with ``str.format_map`` over a dict of plain values: ``rule``,
``machine``, ``zone``, ``owner``, ``severity``, ``value``, ``state``, ``status``; no attribute
or index access (``validate_template`` refuses it at load time), no ``eval``.
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


Condition = StateCondition | OfflineCondition | SignalCondition | CapacityCondition


@dataclass(frozen=True, slots=True)
class AlertRule:
    name: str
    severity: str
    message: str
    condition: Condition
    machines: frozenset[str] | None = None  # None (and zones None): every machine
    zones: frozenset[str] | None = None

    def applies_to(self, machine: str, zone: str) -> bool:
        if self.machines is None and self.zones is None:
            return True
        return (self.machines is not None and machine in self.machines) or (
            self.zones is not None and zone in self.zones
        )


# -- output ----------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class AlertTransition:
    """``alert``: an instance started firing (``firing``) or resolved (not ``firing``)."""

    rule: str
    machine: str
    zone: str
    owner: str
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


class _Instance:
    __slots__ = (
        "deadline",
        "firing_since",
        "machine",
        "raw",
        "rule",
        "since",
        "status",
        "value",
    )

    def __init__(self, rule: int, machine: int) -> None:
        self.rule = rule
        self.machine = machine
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


class Alerts:
    def __init__(
        self,
        rules: Sequence[AlertRule],
        machines: Sequence[MachineSpec],
        *,
        states: Mapping[str, State] | None = None,
    ) -> None:
        """``states``: each machine's confirmed state to start from (a plant restored after a
        restart emits no ``StateChanged`` for it); ``offline`` when not given."""
        names: set[str] = set()
        for rule in rules:
            _validate(rule)
            if rule.name in names:
                raise RulesConfigError("*", f"alert rule {rule.name!r} configured twice")
            names.add(rule.name)
        self._rules = tuple(rules)
        start = states or {}
        self._machines = [
            _Machine(m.id, m.zone, m.owner, start.get(m.id, State.OFFLINE)) for m in machines
        ]
        self._index = {m.id: i for i, m in enumerate(machines)}
        # instances of each machine, by rule kind, in rule order
        self._instances: dict[tuple[int, int], _Instance] = {}
        self._by_machine: list[list[_Instance]] = [[] for _ in machines]
        for r, rule in enumerate(self._rules):
            for i, m in enumerate(self._machines):
                if rule.applies_to(m.id, m.zone):
                    inst = _Instance(r, i)
                    self._instances[(r, i)] = inst
                    self._by_machine[i].append(inst)
        self._heap: list[tuple[float, int, int]] = []
        self._now: int | None = None
        self._out: list[AlertTransition] = []

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
        machine = self._machines[index]
        for inst in self._by_machine[index]:
            cond = self._rules[inst.rule].condition
            if not isinstance(cond, SignalCondition):
                continue
            value = sample.values.get(cond.signal)
            if value is None or isinstance(value, str) or not math.isfinite(value):
                continue
            inst.raw = _hysteresis(cond, float(value), inst.raw)
            inst.value = float(value)
            self._signal(inst, machine, at)

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
            machine = self._machines[inst.machine]
            value = self._value(inst, self._now or inst.since)
            out.append(
                AlertView(
                    rule.name,
                    machine.id,
                    machine.zone,
                    machine.owner,
                    rule.severity,
                    inst.status,
                    inst.since,
                    inst.firing_since,
                    value,
                    self._message(inst, value, inst.status),
                )
            )
        return out

    # -- time ------------------------------------------------------------------------------

    def _advance(self, now_ms: int) -> int:
        """Fire every deadline up to ``now_ms``; return the time input is applied at."""
        if self._now is None:
            self._now = now_ms
            for index, machine in enumerate(self._machines):
                machine.state_since = now_ms
                for inst in self._by_machine[index]:
                    cond = self._rules[inst.rule].condition
                    if isinstance(cond, OfflineCondition):
                        self._set(inst, machine.state is State.OFFLINE, now_ms)
                    elif isinstance(cond, StateCondition):
                        self._set(inst, machine.state is cond.state, now_ms)
        if now_ms < self._now:
            return self._now
        heap = self._heap
        while heap and heap[0][0] <= now_ms:
            at, r, i = heapq.heappop(heap)
            inst = self._instances[(r, i)]
            if at != inst.deadline:
                continue
            inst.deadline = math.inf
            if inst.status is Status.PENDING:
                self._fire(inst, int(at))
        self._now = now_ms
        return now_ms

    def _schedule(self, inst: _Instance, at: int) -> None:
        inst.deadline = at
        heapq.heappush(self._heap, (at, inst.rule, inst.machine))

    # -- conditions --------------------------------------------------------------------------

    def _state(self, index: int, state: State, at: int) -> None:
        machine = self._machines[index]
        was_offline = machine.state is State.OFFLINE
        machine.state = state
        machine.state_since = at
        for inst in self._by_machine[index]:
            cond = self._rules[inst.rule].condition
            if isinstance(cond, StateCondition):
                self._set(inst, state is cond.state, at)
            elif isinstance(cond, OfflineCondition):
                self._set(inst, state is State.OFFLINE, at)
            elif isinstance(cond, SignalCondition) and was_offline != (state is State.OFFLINE):
                self._signal(inst, machine, at)

    def _signal(self, inst: _Instance, machine: _Machine, at: int) -> None:
        offline = machine.state is State.OFFLINE
        if offline and inst.status is Status.FIRING:
            return  # inhibited: holds until a value clears it
        self._set(inst, inst.raw and not offline, at)

    def _capacity(self, index: int, event: Capacity, at: int) -> None:
        machine = self._machines[index]
        if event.offered:
            if machine.window_start is None:
                machine.window_start = event.ts_ms - round(event.idle_for_s * 1000)
        else:
            machine.window_start = None
        for inst in self._by_machine[index]:
            if isinstance(self._rules[inst.rule].condition, CapacityCondition):
                self._set(inst, machine.window_start is not None, at)

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
            start = self._machines[inst.machine].window_start
            return (start if start is not None else inst.since) + cond.idle_for_ms
        return inst.since + cond.for_ms

    def _fire(self, inst: _Instance, at: int) -> None:
        inst.status = Status.FIRING
        inst.firing_since = at
        inst.deadline = math.inf
        self._emit(inst, True, self._value(inst, at), at)

    def _value(self, inst: _Instance, at: int) -> float:
        cond = self._rules[inst.rule].condition
        machine = self._machines[inst.machine]
        if isinstance(cond, SignalCondition):
            return inst.value
        if isinstance(cond, CapacityCondition):
            start = machine.window_start
            return 0.0 if start is None else max(0, at - start) / 1000.0
        # state and offline rules: how long the condition has held, in seconds
        return max(0, at - inst.since) / 1000.0

    def _emit(self, inst: _Instance, firing: bool, value: float, at: int) -> None:
        rule = self._rules[inst.rule]
        machine = self._machines[inst.machine]
        status = Status.FIRING if firing else Status.INACTIVE
        self._out.append(
            AlertTransition(
                rule.name,
                machine.id,
                machine.zone,
                machine.owner,
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
        machine = self._machines[inst.machine]
        return render(
            rule.message,
            {
                "rule": rule.name,
                "machine": machine.id,
                "zone": machine.zone,
                "owner": machine.owner,
                "severity": rule.severity,
                "value": value,
                "state": machine.state.value,
                "status": "firing"
                if status is Status.FIRING
                else ("pending" if status is Status.PENDING else "resolved"),
            },
        )


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
