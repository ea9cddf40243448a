"""Bookings follow the machine (issue 15): holds expire, confirmed bookings become ``active``,
``completed``, ``no_show`` or ``preempted`` from the machine's confirmed states.

``transitions`` is pure: reservations, each machine's confirmed state changes, the time and
the rules in; the moves out, decided by the core's ``outcome`` (its docstring states the rules
in plain words). ``BookingLifecycle.settle`` only reads (the store's state history, plus the
plant's current view for a state not committed yet), calls it, and writes every move and every
expired hold in one transaction, so a killed gateway resumes from the store as it was: the
next run decides again from the same history and the same reservations. Until the broker's
backlog is in, and past where a machine's data has arrived (its ``lag_ms``), nothing is
decided: a run still on its way must not be taken for a no-show.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Final

import structlog

from pilotline.gateway.clock import Clock
from pilotline.gateway.store import Store
from pilotline.gateway.store.reservations import Reservations
from pilotline.rules.booking import BookingRules, Reservation, Status
from pilotline.rules.booking.metering import Change, Usage, meter, outcome
from pilotline.rules.plant import MachineView
from pilotline.rules.states import State

log = structlog.get_logger("pilotline.gateway.bookings")

BOOKING_INTERVAL_S: Final = 5.0
"""How often the lifecycle runs: a booking's status lags its machine by this much at most."""

_EVENTS: Final = {
    Status.ACTIVE: "booking.activated",
    Status.COMPLETED: "booking.completed",
    Status.NO_SHOW: "booking.no_show",
    Status.PREEMPTED: "booking.preempted",
}


@dataclass(frozen=True, slots=True)
class Transition:
    """``reservation`` (as read) moves from ``start`` to ``to``; ``note`` says why."""

    reservation: Reservation
    start: Status
    to: Status
    note: str


def _state_at(changes: Sequence[Change], t: int) -> State:
    state = State.OFFLINE  # before the first known state, as metering counts it
    for ts, s in changes:
        if ts > t:
            break
        state = s
    return state


def transitions(
    reservations: Iterable[Reservation],
    changes: Mapping[str, Sequence[Change]],
    now_ms: int,
    rules_of: Callable[[str], BookingRules],
) -> list[Transition]:
    """The moves of the ``confirmed`` and ``active`` ``reservations`` by ``now_ms``, given each
    machine's confirmed ``changes`` (time order; a machine missing has none). A confirmed
    booking found already over moves twice, ``active`` then ``completed``: the history keeps
    every step of the lifecycle."""
    out: list[Transition] = []
    for res in reservations:
        rules = rules_of(res.machine)
        seen = changes.get(res.machine, ())
        to = outcome(res, seen, now_ms, rules)
        if to is None:
            continue
        if to is Status.NO_SHOW:
            why = "idle, not running, by the end of the no-show grace"
            out.append(Transition(res, res.status, to, why))
        elif to is Status.PREEMPTED:
            state = _state_at(seen, res.start_ms + rules.no_show_grace_ms)
            why = "running its owner's job" if state is State.RUNNING else state.value
            why = f"not usable by the end of the no-show grace: {why}"
            out.append(Transition(res, res.status, to, why))
        else:
            if res.status is Status.CONFIRMED:
                out.append(
                    Transition(res, Status.CONFIRMED, Status.ACTIVE, "running inside the grace")
                )
            if to is Status.COMPLETED:
                out.append(Transition(res, Status.ACTIVE, to, "its end has passed"))
    return out


RELEASED: Final = frozenset({Status.NO_SHOW, Status.PREEMPTED})
"""Statuses that give a booking's slot back before its end: the machine is free for others
from then on, so its use is no longer the tenant's."""


def metered_until(book: Reservations, res: Reservation, now_ms: int) -> int:
    """Up to when ``res`` is metered: ``now_ms``, or for a no-show or a preempted booking the
    time it was judged so (the slot was released then: a run after it is someone else's)."""
    if res.status in RELEASED:
        for status, at_ms, _, _ in book.events(res.id):
            if status is res.status:
                return min(at_ms, now_ms)
    return now_ms


class BookingLifecycle:
    def __init__(
        self,
        *,
        store: Store,
        rules_of: Callable[[str], BookingRules],
        machines: Collection[str],
        views: Callable[[], Sequence[MachineView]],
        clock_ms: Clock,
        caught_up: Callable[[], bool] = lambda: True,
        commit: Callable[[], None] = lambda: None,
        interval_s: float = BOOKING_INTERVAL_S,
    ) -> None:
        """``machines``: the configured ones (a booking of a machine no longer configured is
        left as it is); ``views``: the plant's current view (its latest confirmed states);
        ``caught_up``: whether the broker's backlog is in (before, the history may still
        miss the run that would make a booking ``active``: no booking moves, holds expire);
        ``commit``: make the staged samples' states durable (``Committer.commit``), so a run
        staged but not yet in the store's history is judged too."""
        self._commit = commit
        self._caught_up = caught_up
        self._store = store
        self._machines = frozenset(machines)
        self._rules = {m: rules_of(m) for m in self._machines}
        self._views = views
        self._clock_ms = clock_ms
        self._interval_s = interval_s
        # the earliest a booking can start to matter: its start minus the longest early grace
        self._lead_ms = max((r.early_grace_ms for r in self._rules.values()), default=0)

    def changes(
        self, from_ms: int, now_ms: int, machines: Collection[str]
    ) -> dict[str, list[Change]]:
        """Per machine of ``machines``: its confirmed changes from the one in force at
        ``from_ms`` to ``now_ms``, then its current state if the store has not got it yet."""
        out: dict[str, list[Change]] = {m: [] for m in machines}
        for row in self._store.state_history(from_ms, now_ms + 1):
            seen = out.get(str(row["machine"]))
            if seen is not None:
                seen.append((int(row["ts_ms"]), State(row["state"])))
        for view in self._views():
            seen = out.get(view.id)
            since = view.since_ms
            if seen is None or since is None or since > now_ms:
                continue
            if not seen or seen[-1][0] < since:
                seen.append((since, view.state))
        return out

    def settle(self, now_ms: int | None = None) -> list[Transition]:
        """One run: expire the holds due, move the bookings whose window has begun; log
        each move. Returns the moves made (not the expired holds)."""
        now = self._clock_ms() if now_ms is None else now_ms
        # the history is read from the store and only the current state from the plant: a
        # run that began and ended since the last commit would be in neither
        self._commit()
        book = self._store.reservations()
        due = [
            res
            for res in book.list(
                to_ms=now + self._lead_ms + 1, statuses={Status.CONFIRMED, Status.ACTIVE}
            )
            if res.machine in self._machines
            and res.start_ms - self._rules[res.machine].early_grace_ms <= now
        ]
        moves: list[Transition] = []
        if due and self._caught_up():
            since = min(res.start_ms - self._rules[res.machine].early_grace_ms for res in due)
            changes = self.changes(since, now, {res.machine for res in due})
            # a machine's data that runs behind the clock is judged as of where it is: a run
            # still on its way must not be taken for a no-show
            lag = {v.id: v.lag_ms for v in self._views()}
            for machine in sorted({res.machine for res in due}):
                mine = [res for res in due if res.machine == machine]
                known = now - max(0, lag.get(machine, 0))
                moves += transitions(mine, changes, known, self._rules.__getitem__)
        steps = [(t.reservation.id, t.start, t.to, t.note) for t in moves]
        expired, moved = book.settle(steps, now)
        for rid in expired:
            log.info("booking.hold_expired", reservation=rid)
        for res, note in moved:
            log.info(
                _EVENTS[res.status],
                reservation=res.id,
                machine=res.machine,
                tenant=res.tenant,
                start_ms=res.start_ms,
                end_ms=res.end_ms,
                note=note,
            )
        made = {(res.id, res.status) for res, _ in moved}
        return [t for t in moves if (t.reservation.id, t.to) in made]

    def usage(self, rid: str, now_ms: int | None = None) -> Usage | None:
        """``rid``'s metered use by ``now_ms`` (see metering.py), or None: no such booking."""
        now = self._clock_ms() if now_ms is None else now_ms
        res = self._store.reservations().get(rid)
        if res is None:
            return None
        until = metered_until(self._store.reservations(), res, now)
        changes = self.changes(res.start_ms, until, {res.machine})[res.machine]
        return meter(res, changes, until)

    async def run(self) -> None:
        """Settle every ``interval_s``. A failed run (the file locked by another process
        longer than the busy timeout, a full disk) is logged and retried at the next."""
        while True:
            try:
                self.settle()
            except sqlite3.Error as exc:
                log.warning("booking.settle_failed", error=str(exc))
            await asyncio.sleep(self._interval_s)
