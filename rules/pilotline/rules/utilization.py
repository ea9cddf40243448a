"""Utilization: the share of a period each machine spent in each canonical state. Pure.

Theory of operation. The input is a machine's confirmed state changes (``machine_state``
points, or the embedded store's ``state_history``), each stamped at the state's start.
Between two changes the machine was in the earlier one's state; before its first known
change it counts as ``offline`` (nothing was known, and silence is never idle); the last
state lasts until the end of the period or until ``now_ms``, whichever is earlier: what has
not happened yet is not counted at all, so a period that reaches into the future is measured
over its elapsed part (``until_ms``) and its shares still add up to 1.

A zone's figures are the sums of its machines' (machine-seconds), its shares those sums over
``machines x elapsed period``. No clock, no I/O: the period and ``now_ms`` are passed in.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta, tzinfo

from pilotline.rules.states import State

STATES: tuple[State, ...] = (
    State.RUNNING,
    State.IDLE,
    State.DOWN,
    State.MAINTENANCE,
    State.OFFLINE,
)
"""The order in which states are reported (the ``utilization`` measurement's fields)."""


@dataclass(frozen=True, slots=True)
class StateChange:
    """One confirmed transition: ``machine`` entered ``state`` at ``ts_ms``."""

    machine: str
    zone: str
    ts_ms: int
    state: State


@dataclass(frozen=True, slots=True)
class Usage:
    """Milliseconds spent in each state over an elapsed period of ``period_ms``.

    For a zone, ``period_ms`` is machine-milliseconds (``machines x`` the elapsed period).
    """

    ms: Mapping[State, int]
    period_ms: int

    def seconds(self, state: State) -> float:
        return self.ms.get(state, 0) / 1000.0

    def share(self, state: State) -> float:
        """0..1; 0.0 for an empty period."""
        return self.ms.get(state, 0) / self.period_ms if self.period_ms > 0 else 0.0


@dataclass(frozen=True, slots=True)
class MachineUsage:
    machine: str
    zone: str
    usage: Usage


@dataclass(frozen=True, slots=True)
class ZoneUsage:
    zone: str
    machines: int
    usage: Usage


@dataclass(frozen=True, slots=True)
class Utilization:
    """Per machine (sorted by zone, machine) and per zone (sorted), over [from, until)."""

    from_ms: int
    to_ms: int
    until_ms: int
    """The end of what was measured: ``min(to_ms, now_ms)``, never before ``from_ms``."""
    machines: tuple[MachineUsage, ...] = field(default=())
    zones: tuple[ZoneUsage, ...] = field(default=())


def utilization(
    changes: Iterable[StateChange],
    from_ms: int,
    to_ms: int,
    *,
    now_ms: int | None = None,
    machines: Mapping[str, str] | None = None,
) -> Utilization:
    """Utilization over ``[from_ms, to_ms)`` clipped at ``now_ms``.

    ``changes`` may come in any order and may include changes before ``from_ms`` (the last
    one before it gives the state at the start) or after the period (ignored). ``machines``
    (id -> zone) lists machines to report even without any change: they were offline
    throughout. A machine that has changes but is not in ``machines`` is reported in the
    zone of its latest change. Two changes of one machine at the same time: the later in the
    input wins (the earlier lasted no time).
    """
    if to_ms < from_ms:
        raise ValueError("the period ends before it starts")
    until = to_ms if now_ms is None else max(from_ms, min(to_ms, now_ms))
    period = until - from_ms
    by_machine: dict[str, list[StateChange]] = {}
    zone_of: dict[str, str] = dict(machines or {})
    # sorted() is stable: changes at the same time keep their input order.
    for change in sorted(changes, key=lambda c: c.ts_ms):
        by_machine.setdefault(change.machine, []).append(change)
    for machine, machine_changes in by_machine.items():
        if machines is None or machine not in machines:
            zone_of[machine] = machine_changes[-1].zone

    out: list[MachineUsage] = []
    for machine, zone in zone_of.items():
        ms = dict.fromkeys(STATES, 0)
        state = State.OFFLINE
        at = from_ms
        for change in by_machine.get(machine, ()):
            if change.ts_ms <= from_ms:
                state = change.state
                continue
            if change.ts_ms >= until:
                break
            ms[state] += change.ts_ms - at
            state, at = change.state, change.ts_ms
        ms[state] += until - at
        out.append(MachineUsage(machine, zone, Usage(ms, period)))
    out.sort(key=lambda m: (m.zone, m.machine))

    zones: dict[str, tuple[int, dict[State, int]]] = {}
    for m in out:
        count, totals = zones.get(m.zone, (0, dict.fromkeys(STATES, 0)))
        for state, spent in m.usage.ms.items():
            totals[state] += spent
        zones[m.zone] = (count + 1, totals)
    zone_usage = tuple(
        ZoneUsage(zone, count, Usage(totals, period * count))
        for zone, (count, totals) in sorted(zones.items())
    )
    return Utilization(from_ms, to_ms, until, tuple(out), zone_usage)


def day_start_ms(ms: int, tz: tzinfo = UTC) -> int:
    """The start of the (local, in ``tz``) day that contains ``ms``."""
    local = datetime.fromtimestamp(ms / 1000, tz=tz).date()
    return _midnight_ms(local, tz)


def next_day_ms(day_ms: int, tz: tzinfo = UTC) -> int:
    """The start of the day after the one that contains ``day_ms``: 23, 24 or 25 hours
    later across a daylight-saving change."""
    local = datetime.fromtimestamp(day_ms / 1000, tz=tz).date()
    return _midnight_ms(local + timedelta(days=1), tz)


def _midnight_ms(day: date, tz: tzinfo) -> int:
    # Midnight that does not exist (a zone changing its clocks at 00:00) resolves forward
    # through fold/UTC arithmetic: fromtimestamp normalises it.
    midnight = datetime.combine(day, time(0), tzinfo=tz)
    return int(midnight.timestamp() * 1000)
