"""One machine's state, idle window and capacity, driven by samples and deadlines.

Theory of operation
-------------------
Each sample is *classified* into a candidate state: an enumerated signal through the
machine's mapping, a numeric one through thresholds with hysteresis (between the thresholds
the previous classification holds). A candidate that differs from the confirmed state becomes
*pending*; it is confirmed once it has held for ``debounce_ms``, and then starts at the time
of its first sample, so a blip shorter than the debounce never splits a window and window
edges are the real transition times.

Time. Each machine keeps its own clock, in its source's time: a sample moves only its own
machine, never another. The gateway's clock (``now``, passed with every input) moves a
machine's clock on from its latest sample, ``lag_ms`` behind: the distance between the
gateway's clock and that sample's stamp when it arrived (0 for a live source, the age of the
data for a backlog an edge device flushes). So a backlog plays in its own time, with the same
debounces and staleness a replay of it gives, while a live machine runs on the gateway clock.
``fire(t)`` handles this machine's deadlines up to ``t`` of its own time: the debounce
confirmation, staleness (``last_seen + stale_after``: the machine goes ``offline`` at its last
sample and an idle window ends at its last idle sample), the end of freshness, the policy's
edges and the periodic capacity report.

What was decided is never rewritten: ``decided_ms`` is the latest time of an event this
machine emitted (periodic reports restate, they do not decide). A sample newer than that
applies at its own time, even behind the machine's clock (nothing was decided in between);
an older one is applied at ``decided_ms`` and reported as ``SampleLate``.

Capacity is never false: idle time is available only on evidence, when an idle sample at
least ``min_idle`` into the window has been seen, no other state is pending and the data is
fresh by the gateway's clock (``lag + age < stale_after``). So a window shorter than
``min_idle`` is never offered, a pending candidate ends availability at its first sample
(and a dropped blip restores it then), and silence is never sold.

Every change of the confirmed state goes through ``_transition``.

The common sample keeps the state its machine is in. ``receive`` handles it on a fast path
(classification inlined for a mapped string and a threshold float, no capacity check, no
rescheduling) and returns False: only the staleness clock moved on, later, and the deadline
already in the plant's heap is re-armed when it pops (``Plant._advance``); what that gains is
measured in benchmarks/README.md.
"""

from __future__ import annotations

import enum
import math
from typing import NamedTuple

from pilotline.rules.events import (
    Capacity,
    Event,
    IdleWindowClosed,
    IdleWindowOpened,
    SampleLate,
    SampleRejected,
    StateChanged,
)
from pilotline.rules.sample import Quality, Sample
from pilotline.rules.spec import MachineSpec, MappedState, ThresholdState
from pilotline.rules.states import State

NEVER = math.inf
_BAD = Quality.BAD
_new_tuple = tuple.__new__
_IDLE = State.IDLE
_RUNNING = State.RUNNING


class Checkpoint(NamedTuple):
    """What a machine's tracker needs to resume after a restart (``Plant.checkpoint`` and
    ``Plant.restore``): its confirmed state and open idle window, the pending candidate, the
    last classification (hysteresis) and the staleness clock (``last_seen_ms``).

    Periodic reports and the capacity flags are not kept: they are recomputed, so a restored
    machine restates its capacity once at its next sample or deadline. Immutable; a
    NamedTuple because every commit makes one per machine it touched."""

    machine: str
    state: State
    since_ms: int | None
    window_start_ms: int | None
    window_offered: bool
    last_seen_ms: int | None
    last_idle_ms: int | None
    last_ts_ms: int | None
    raw: State | None
    pending: State | None
    pending_since_ms: int


class _Rejected(enum.Enum):
    REJECTED = enum.auto()


class _Hold(enum.Enum):
    HOLD = enum.auto()


REJECTED = _Rejected.REJECTED
HOLD = _Hold.HOLD  # between the thresholds: the previous classification holds


_Flat = tuple[dict[str, State], dict[State, frozenset[str]]]
_FLAT: dict[int, tuple[MappedState, _Flat]] = {}
"""By ``id(rule)``; the rule is kept with its entry so its id cannot be reused meanwhile."""


def _flattened(rule: MappedState) -> _Flat:
    """A map rule as the fast path reads it: value -> state, and state -> its values. Never
    mutated by the trackers that share it."""
    entry = _FLAT.get(id(rule))
    if entry is not None and entry[0] is rule:
        return entry[1]
    holds = {state: frozenset(k for k, v in rule.mapping.items() if v is state) for state in State}
    flat = (dict(rule.mapping), holds)
    if len(_FLAT) >= 4096:  # a bound for processes that build many plants (tests, replays)
        _FLAT.clear()
    _FLAT[id(rule)] = (rule, flat)
    return flat


class MachineTracker:
    __slots__ = (
        "_hold",
        "_holds",
        "_idle_below",
        "_mapping",
        "_offered",
        "_policy_from",
        "_policy_ok",
        "_policy_until",
        "_raw",
        "_running_above",
        "_signal",
        "_window_offered",
        "available",
        "clock_ms",
        "decided_ms",
        "due_ms",
        "lag_ms",
        "last_idle_ms",
        "last_seen_ms",
        "last_ts_ms",
        "next_tick_ms",
        "pending",
        "pending_since_ms",
        "since_ms",
        "spec",
        "state",
        "window_start_ms",
    )

    def __init__(self, spec: MachineSpec) -> None:
        self.spec = spec
        # The state rule, flattened for the fast path of ``receive``.
        rule = spec.state
        self._signal = rule.signal
        self._mapping: dict[str, State] | None = None
        self._running_above = NEVER
        self._idle_below = -NEVER
        # The values that map to each state; ``_hold``: those of the confirmed state.
        self._holds: dict[State, frozenset[str]] = {}
        if isinstance(rule, MappedState):
            # Shared by every tracker of the same rule object (the configuration gives
            # machines with the same map one rule), not copied per machine (measured:
            # benchmarks/README.md).
            self._mapping, self._holds = _flattened(rule)
        else:
            self._running_above = rule.running_above
            self._idle_below = rule.idle_below
        self._hold: frozenset[str] = self._holds.get(State.OFFLINE, frozenset())
        self.state = State.OFFLINE
        self.since_ms: int | None = None
        self._raw: State | None = None
        self.pending: State | None = None
        self.pending_since_ms = 0
        self.last_ts_ms: int | None = None
        self.last_seen_ms: int | None = None
        self.last_idle_ms: int | None = None
        self.window_start_ms: int | None = None
        self._window_offered = False
        self.available = False
        self._offered = False
        # The policy's answer is cached for the span it holds over (no time zone maths per
        # sample); its end is a deadline while the machine is idle.
        self._policy_ok = False
        self._policy_from: float = NEVER
        self._policy_until: float = -NEVER
        self.next_tick_ms: float = NEVER
        # This machine's own time (see the module doc): how far it has run, how far behind
        # the gateway's clock it runs, what it decided last, and its next deadline as last
        # computed (a lower bound: the fast path only needs to know none is due).
        self.clock_ms: float = -NEVER
        self.lag_ms = 0
        self.decided_ms: float = -NEVER
        self.due_ms: float = -NEVER

    # -- restart ---------------------------------------------------------------------------

    def checkpoint(self) -> Checkpoint:
        # tuple.__new__: Checkpoint(...) without the NamedTuple's Python-level __new__
        return _new_tuple(
            Checkpoint,
            (
                self.spec.id,
                self.state,
                self.since_ms,
                self.window_start_ms,
                self._window_offered,
                self.last_seen_ms,
                self.last_idle_ms,
                self.last_ts_ms,
                self._raw,
                self.pending,
                self.pending_since_ms,
            ),
        )

    def restore(self, cp: Checkpoint) -> None:
        """Resume from ``cp`` as if the samples behind it had just been received. The
        machine's clock resumes at its latest sample; ``start`` sets how far behind the
        gateway's clock it then runs, so a broker backlog still applies at its own time."""
        self.state = cp.state
        self._hold = self._holds.get(cp.state, frozenset())
        self.since_ms = cp.since_ms
        idle = cp.state is State.IDLE
        self.window_start_ms = cp.window_start_ms if idle else None
        self._window_offered = cp.window_offered and idle
        self.last_seen_ms = cp.last_seen_ms
        self.last_idle_ms = cp.last_idle_ms
        self.last_ts_ms = cp.last_ts_ms
        self._raw = cp.raw
        self.pending = cp.pending
        self.pending_since_ms = cp.pending_since_ms
        if self.pending is not None and self.last_seen_ms is None:
            self.pending = None  # nothing to time it against
        self.available = False
        self._offered = False
        known = [t for t in (cp.since_ms, cp.last_seen_ms, cp.last_ts_ms) if t is not None]
        if known:
            self.clock_ms = self.decided_ms = max(known)
        self.due_ms = -NEVER

    def start(self, now_ms: int) -> None:
        """The gateway's clock is first known: periodic reports count from it, and a
        restored machine runs from its latest sample, as far behind as that is old."""
        interval = self.spec.publish_interval_ms
        self.next_tick_ms = (now_ms // interval + 1) * interval
        if self.clock_ms > -NEVER:
            self.lag_ms = max(0, now_ms - int(self.clock_ms))

    def clock_at(self, now_ms: int) -> int:
        """This machine's time when the gateway's clock reads ``now_ms``."""
        return int(max(self.clock_ms, now_ms - self.lag_ms))

    # -- input -----------------------------------------------------------------------------

    def receive(self, sample: Sample, now_ms: int, out: list[Event]) -> bool:
        """Apply one sample that arrived when the gateway's clock read ``now_ms``.

        Returns True when a deadline may have come earlier (the plant reschedules this
        machine), False when only the staleness clock moved on (see the module doc)."""
        sample_ts = sample.ts_ms
        last_ts = self.last_ts_ms
        if (
            last_ts is not None
            and sample_ts >= last_ts
            and sample_ts >= self.clock_ms
            and sample_ts < self.due_ms
            and self.pending is None
            and sample.quality is not _BAD
            and self.last_seen_ms is not None
            and self.lag_ms == (now_ms - sample_ts if now_ms > sample_ts else 0)
        ):
            # The fast path: an in-order sample that classifies into the confirmed state,
            # with no change pending, no deadline of this machine due by its time and no
            # change of lag. Capacity cannot change either unless the sample is idle
            # evidence that completes ``min_idle``; anything else goes the general way.
            value = sample.values.get(self._signal)
            state = self.state
            if value in self._hold:  # a mapped value of the confirmed state
                hit = True
            elif self._mapping is None and type(value) is float:
                if value >= self._running_above:
                    hit = state is _RUNNING
                elif value < self._idle_below:
                    hit = state is _IDLE
                else:
                    hit = self._raw is state
            else:
                hit = False
            if hit and state is _IDLE and not self.available:
                start = self.window_start_ms
                hit = start is not None and sample_ts - start < self.spec.min_idle_ms
            if hit:
                self.last_ts_ms = sample_ts
                self.last_seen_ms = sample_ts
                self.clock_ms = sample_ts
                self._raw = state
                if state is _IDLE:
                    self.last_idle_ms = sample_ts
                return False
        return self._receive(sample, now_ms, out)

    def _receive(self, sample: Sample, now_ms: int, out: list[Event]) -> bool:
        sample_ts = sample.ts_ms
        last_ts = self.last_ts_ms
        if last_ts is not None and sample_ts < last_ts:
            out.append(
                SampleRejected(
                    self.spec.id,
                    sample_ts,
                    "out_of_order",
                    f"sample at {sample_ts} ms is older than the last one at {last_ts} ms",
                )
            )
            return False
        if sample.quality is _BAD:
            # A Bad value never drives a state, nor keeps the machine alive: persistent Bad
            # quality ends in `offline` through staleness, never in sellable `idle`.
            self.last_ts_ms = sample_ts
            return False
        # ``_classify``, inlined for the two common cases.
        value = sample.values.get(self._signal)
        candidate: State | _Rejected | _Hold
        mapping = self._mapping
        if value is None:
            return self._heartbeat(sample_ts, now_ms, out)
        if mapping is not None and type(value) is str:
            candidate = mapping.get(value) or self._classify(sample, out)
        elif mapping is None and type(value) is float:
            if value >= self._running_above:
                candidate = _RUNNING
            elif value < self._idle_below:
                candidate = _IDLE
            else:
                candidate = HOLD
        else:
            candidate = self._classify(sample, out)
        if candidate is REJECTED:
            return False
        # Where the sample applies in this machine's time: its own, unless it is older
        # than the latest decision (never rewritten).
        at = sample_ts
        if at < self.decided_ms:
            at = int(self.decided_ms)
            out.append(SampleLate(self.spec.id, sample_ts, at))
        if at >= self.clock_ms:
            self.fire(at, out)  # this machine's deadlines before it fall due first
        self.clock_ms = at  # possibly back: nothing was decided after ``at``
        self.lag_ms = now_ms - at if now_ms > at else 0
        self.last_ts_ms = sample_ts
        self.last_seen_ms = at
        if candidate is HOLD:
            held = self._raw  # between the thresholds (after staleness, if it fired)
            if held is None:
                return True  # nothing known yet
            candidate = held
        assert isinstance(candidate, State)
        self._raw = candidate
        if candidate is _IDLE:
            self.last_idle_ms = at
        if candidate is self.state:
            self.pending = None  # the confirmed state holds (a blip, if one was pending)
        elif candidate is not self.pending:
            self.pending = candidate
            self.pending_since_ms = at
        if self.pending is not None and self.spec.debounce_ms == 0:
            self._confirm(out)
        self._update_capacity(at, out)
        return True

    def _heartbeat(self, sample_ts: int, now_ms: int, out: list[Event]) -> bool:
        """A sample without the state signal. It proves a link, not a state: for a source
        that reports every sample it changes nothing; for one that reports only changes it
        keeps the last value current up to this machine's clock."""
        if not self.spec.report_on_change or self.last_seen_ms is None:
            return False
        at = max(sample_ts, self.clock_at(now_ms))
        if at >= self.clock_ms:
            self.fire(at, out)
        if self.state is State.OFFLINE and self.pending is None:
            return True  # stale already: only a value brings it back
        self.clock_ms = max(self.clock_ms, at)
        if self.last_ts_ms is None or sample_ts > self.last_ts_ms:
            self.last_ts_ms = sample_ts
        self.last_seen_ms = at
        if self._raw is _IDLE:
            self.last_idle_ms = at
        self._update_capacity(at, out)
        return True

    def _classify(self, sample: Sample, out: list[Event]) -> State | _Rejected | _Hold:
        """Candidate state of a sample carrying the state signal; ``HOLD`` between the
        thresholds (the previous classification holds)."""
        rule = self.spec.state
        value = sample.values[rule.signal]
        if isinstance(rule, MappedState):
            key = value if isinstance(value, str) else _enum_key(value)
            state = rule.mapping.get(key) if key is not None else None
            if state is None:
                out.append(
                    SampleRejected(
                        self.spec.id,
                        sample.ts_ms,
                        "unmapped_state",
                        f"{rule.signal}={value!r} is not in the state map",
                    )
                )
                return REJECTED
            return state
        assert isinstance(rule, ThresholdState)
        if isinstance(value, str):
            out.append(
                SampleRejected(
                    self.spec.id,
                    sample.ts_ms,
                    "wrong_type",
                    f"{rule.signal}={value!r}: thresholds need a number",
                )
            )
            return REJECTED
        if value >= rule.running_above:
            return State.RUNNING
        if value < rule.idle_below:
            return State.IDLE
        return HOLD

    # -- time ------------------------------------------------------------------------------

    def next_deadline(self) -> float:
        """The next deadline in this machine's time (the plant adds ``lag_ms``)."""
        deadline = self.next_tick_ms
        if self.pending is not None:
            deadline = min(deadline, self.pending_since_ms + self.spec.debounce_ms)
        last_seen = self.last_seen_ms
        if last_seen is not None and (self.state is not State.OFFLINE or self.pending is not None):
            deadline = min(deadline, last_seen + self.spec.stale_after_ms)
        if self.available:
            assert last_seen is not None
            # freshness by the gateway's clock ends first when this machine runs behind it
            deadline = min(deadline, last_seen + self.spec.stale_after_ms - self.lag_ms)
            if self._policy_until > -NEVER:
                deadline = min(deadline, self._policy_until)
        self.due_ms = deadline
        return deadline

    def fire(self, now_ms: int, out: list[Event]) -> None:
        """Handle every deadline due at or before ``now_ms`` of this machine's time, in time
        order. Time never goes back here: an earlier ``now_ms`` does nothing."""
        if now_ms < self.clock_ms:
            return
        while True:
            debounce = (
                self.pending_since_ms + self.spec.debounce_ms
                if self.pending is not None
                else NEVER
            )
            stale = (
                self.last_seen_ms + self.spec.stale_after_ms
                if self.last_seen_ms is not None
                and (self.state is not State.OFFLINE or self.pending is not None)
                else NEVER
            )
            at = min(debounce, stale)
            if at > now_ms:
                break
            at_ms = int(at)
            if debounce <= stale:
                self._confirm(out)
            else:
                self._go_stale(out)
            self._update_capacity(at_ms, out)
        self.clock_ms = now_ms
        self._update_capacity(now_ms, out)
        if self.next_tick_ms <= now_ms:
            tick = int(self.next_tick_ms)
            out.append(self._capacity(tick, periodic=True))
            interval = self.spec.publish_interval_ms
            self.next_tick_ms = (now_ms // interval + 1) * interval

    def _confirm(self, out: list[Event]) -> None:
        assert self.pending is not None
        new, self.pending = self.pending, None
        since = self.pending_since_ms
        decided = since + self.spec.debounce_ms
        self._transition(new, since, out, window_end_ms=since, decided_ms=decided)

    def _go_stale(self, out: list[Event]) -> None:
        assert self.last_seen_ms is not None
        self.pending = None
        self._raw = None
        window_end = self.last_idle_ms if self.last_idle_ms is not None else self.last_seen_ms
        decided = self.last_seen_ms + self.spec.stale_after_ms
        self._transition(
            State.OFFLINE, self.last_seen_ms, out, window_end_ms=window_end, decided_ms=decided
        )

    # -- the one place a state changes -----------------------------------------------------

    def _transition(
        self, new: State, at_ms: int, out: list[Event], *, window_end_ms: int, decided_ms: int
    ) -> None:
        if new is self.state:
            return
        spec = self.spec
        if self.state is State.IDLE and self.window_start_ms is not None:
            end = max(window_end_ms, self.window_start_ms)
            closed = IdleWindowClosed(
                spec.id, spec.zone, self.window_start_ms, end, self._window_offered
            )
            out.append(closed)
            self.window_start_ms = None
        out.append(
            StateChanged(spec.id, spec.zone, spec.owner, new, self.state, at_ms, decided_ms)
        )
        self.decided_ms = max(self.decided_ms, decided_ms)
        self.state = new
        self._hold = self._holds.get(new, frozenset())
        self.since_ms = at_ms
        if new is State.IDLE:
            self.window_start_ms = at_ms
            self._window_offered = False
            out.append(IdleWindowOpened(spec.id, spec.zone, at_ms))

    # -- capacity --------------------------------------------------------------------------

    def _update_capacity(self, now_ms: int, out: list[Event]) -> None:
        """Emit ``Capacity`` when availability changes; stamped when the change is known."""
        spec = self.spec
        start = self.window_start_ms
        last_idle = self.last_idle_ms
        last_seen = self.last_seen_ms
        available = (
            self.state is _IDLE
            and self.pending is None
            and start is not None
            and last_idle is not None
            and last_idle - start >= spec.min_idle_ms
            and last_seen is not None
            and now_ms + self.lag_ms - last_seen < spec.stale_after_ms
        )
        offered = available and self._policy_offers(now_ms)
        if available == self.available and offered == self._offered:
            return
        self.available = available
        self._offered = offered
        if offered:
            self._window_offered = True
        self.decided_ms = max(self.decided_ms, now_ms)
        out.append(self._capacity(now_ms, periodic=False))

    def _policy_offers(self, now_ms: int) -> bool:
        if not (self._policy_from <= now_ms < self._policy_until):
            span = self.spec.policy.offers(now_ms)
            self._policy_ok = span.allowed
            self._policy_from = now_ms
            # an edge beyond the policy's horizon: look again in a day
            self._policy_until = span.end_ms if span.end_ms is not None else now_ms + 86_400_000
        return self._policy_ok

    @property
    def offered(self) -> bool:
        return self._offered

    def idle_for_ms(self, now_ms: int) -> int:
        if self.state is State.IDLE and self.window_start_ms is not None:
            return max(0, now_ms - self.window_start_ms)
        return 0

    def _capacity(self, now_ms: int, *, periodic: bool) -> Capacity:
        spec = self.spec
        return Capacity(
            spec.id,
            spec.zone,
            spec.owner,
            now_ms,
            self.available,
            self.idle_for_ms(now_ms) / 1000.0,
            self._offered,
            periodic,
        )


def _enum_key(value: float) -> str | None:
    """OPC UA enumerations arrive as integers; map keys are their text (`"1"`)."""
    if value.is_integer():
        return str(int(value))
    return None
