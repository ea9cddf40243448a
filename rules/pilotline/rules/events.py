"""Events the core emits. Frozen and slotted: they flow at the sample rate.

Each event maps onto one measurement of the time-series contract in ../shared/DESIGN.md
(``SampleRejected`` onto the quarantine and counters instead). All times are event time in
epoch milliseconds.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from pilotline.rules.states import State


@dataclass(frozen=True, slots=True)
class StateChanged:
    """``machine_state``: a confirmed transition, stamped at the new state's first sample.

    ``decided_ms`` is when the core *knew* it: the end of the debounce, or the staleness
    deadline for ``offline`` (-1 when unknown). Alert rules time their ``for:`` from it, so
    a state stamped in the past never fires an alert before it was decided. It takes no
    part in equality.
    """

    machine: str
    zone: str
    owner: str
    state: State
    previous: State
    ts_ms: int
    decided_ms: int = field(default=-1, compare=False)


@dataclass(frozen=True, slots=True)
class IdleWindowOpened:
    """An idle window started (not a measurement; the embedded store tracks open windows)."""

    machine: str
    zone: str
    start_ms: int


@dataclass(frozen=True, slots=True)
class IdleWindowClosed:
    """``idle_window``: written when the window closes, stamped at its start."""

    machine: str
    zone: str
    start_ms: int
    end_ms: int
    offered: bool

    @property
    def duration_s(self) -> float:
        return (self.end_ms - self.start_ms) / 1000.0


@dataclass(frozen=True, slots=True)
class Capacity:
    """``capacity``: on every change of ``available``/``offered``, and periodically."""

    machine: str
    zone: str
    owner: str
    ts_ms: int
    available: bool
    idle_for_s: float
    offered: bool
    periodic: bool = False
    # a live booking covers ts_ms (then offered is False); set by the shell from its
    # reservations (booking/capacity.py), never by the machine's core
    reserved: bool = False


@dataclass(frozen=True, slots=True)
class ZoneCapacity:
    """``zone_capacity``: machine counts of one capability in one zone, periodically."""

    zone: str
    capability: str
    ts_ms: int
    machines: int
    available: int
    running: int
    down: int
    offline: int
    reserved: int = 0  # machines a live booking covers at ts_ms (set by the shell)


@dataclass(frozen=True, slots=True)
class SampleRejected:
    """A sample the core would not use; the shell counts it by reason and quarantines it."""

    machine: str
    ts_ms: int
    reason: str
    detail: str


@dataclass(frozen=True, slots=True)
class SampleLate:
    """A sample older than what its machine had already decided, applied at ``applied_ms``
    (the latest decision) instead of its own time: what was decided is never rewritten. The
    shell counts these per machine."""

    machine: str
    ts_ms: int
    applied_ms: int


Event = (
    StateChanged
    | IdleWindowOpened
    | IdleWindowClosed
    | Capacity
    | ZoneCapacity
    | SampleRejected
    | SampleLate
)
