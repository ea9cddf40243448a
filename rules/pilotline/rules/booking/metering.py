"""Metering a reservation from the machine's confirmed states, and its outcome.

Rules, in plain words:
- Inside the booking, every millisecond counts in the confirmed state the machine was in
  (states start at their first sample, as everywhere); before the machine's first known
  state it counts as ``offline``.
- Overrun: the machine still running past the booking's end, until that run ends (or now).
- Use starts when the machine is measured ``running`` from a run that began within
  ``[start - early_grace, start + no_show_grace]``: the booking becomes ``active``. A run that
  began earlier is the owner's, not the tenant's.
- By ``start + no_show_grace`` with no such run: ``preempted`` if the machine was not
  usable then (down, offline, maintenance, or running its owner's job), else ``no_show``.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from pilotline.rules.booking.reservation import BookingRules, Reservation, Status
from pilotline.rules.states import State

Change = tuple[int, State]
"""A confirmed state and the time it started (``StateChanged.ts_ms``), in time order."""


@dataclass(frozen=True, slots=True)
class Usage:
    running_ms: int = 0
    idle_ms: int = 0
    down_ms: int = 0
    maintenance_ms: int = 0
    offline_ms: int = 0
    overrun_ms: int = 0

    @property
    def booked_ms(self) -> int:
        return self.running_ms + self.idle_ms + self.down_ms + self.maintenance_ms + self.offline_ms


def _state_at(changes: Sequence[Change], t: int) -> tuple[State, int]:
    """The state at ``t`` and the index of the first change after ``t``."""
    state = State.OFFLINE
    i = 0
    while i < len(changes) and changes[i][0] <= t:
        state = changes[i][1]
        i += 1
    return state, i


def meter(res: Reservation, changes: Sequence[Change], now_ms: int) -> Usage:
    """Milliseconds per state inside ``[start, min(end, now))`` and the overrun after it."""
    totals = dict.fromkeys(State, 0)
    until = min(res.end_ms, now_ms)
    state, i = _state_at(changes, res.start_ms)
    t = res.start_ms
    while t < until:
        nxt = changes[i][0] if i < len(changes) else until
        stop = min(nxt, until)
        totals[state] += stop - t
        t = stop
        if i < len(changes) and changes[i][0] <= t:
            state = changes[i][1]
            i += 1
    overrun = 0
    if now_ms > res.end_ms:
        state, i = _state_at(changes, res.end_ms)
        if state is State.RUNNING:
            stop = changes[i][0] if i < len(changes) else now_ms
            overrun = min(stop, now_ms) - res.end_ms
    return Usage(
        totals[State.RUNNING],
        totals[State.IDLE],
        totals[State.DOWN],
        totals[State.MAINTENANCE],
        totals[State.OFFLINE],
        overrun,
    )


def outcome(
    res: Reservation, changes: Sequence[Change], now_ms: int, rules: BookingRules
) -> Status | None:
    """What a confirmed or active reservation has become by ``now_ms`` (None: no change
    yet): ``active``, ``completed``, ``no_show`` or ``preempted``."""
    if res.status not in (Status.CONFIRMED, Status.ACTIVE):
        return None
    if res.status is Status.CONFIRMED:
        window_start = res.start_ms - rules.early_grace_ms
        window_end = res.start_ms + rules.no_show_grace_ms
        for ts, state in changes:
            if state is State.RUNNING and window_start <= ts <= min(window_end, now_ms):
                return Status.COMPLETED if now_ms >= res.end_ms else Status.ACTIVE
        if now_ms < window_end:
            return None
        state, _ = _state_at(changes, window_end)
        return Status.NO_SHOW if state is State.IDLE else Status.PREEMPTED
    return Status.COMPLETED if now_ms >= res.end_ms else None
