"""Alert rules and their conditions: what each kind means, how it is checked at load time,
and what of it an episode depends on (the package docstring describes the kinds)."""

from __future__ import annotations

import math
from dataclasses import dataclass

from pilotline.rules.alerts.templates import validate_template
from pilotline.rules.errors import RulesConfigError
from pilotline.rules.labels import SEVERITIES
from pilotline.rules.states import State


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


@dataclass(frozen=True, slots=True)
class InterlockCondition:
    """The machine's soft interlock does not read back (its OPC UA node refused the write, or
    its readback differs from what was written); one instance per machine."""

    for_ms: int = 0


Condition = (
    StateCondition
    | OfflineCondition
    | SignalCondition
    | CapacityCondition
    | CollectorCondition
    | InterlockCondition
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


def hysteresis(cond: SignalCondition, value: float, previous: bool) -> bool:
    """A signal condition's answer for ``value``, given its ``previous`` answer."""
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


def fingerprint(cond: Condition) -> str:
    """What an instance's episode depends on, ``for:`` aside (a changed ``for:`` keeps it)."""
    if isinstance(cond, StateCondition):
        return f"state:{cond.state.value}"
    if isinstance(cond, OfflineCondition):
        return "offline"
    if isinstance(cond, CapacityCondition):
        return "capacity"
    if isinstance(cond, CollectorCondition):
        return "collector"
    if isinstance(cond, InterlockCondition):
        return "interlock"
    return f"signal:{cond.signal}:{cond.above!r}:{cond.below!r}:{cond.clear!r}"


def validate_rule(rule: AlertRule) -> None:
    """Raise ``RulesConfigError`` for a rule the core cannot evaluate."""
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
