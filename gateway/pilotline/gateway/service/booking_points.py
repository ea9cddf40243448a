"""The ``booking`` and ``usage`` measurements (issue 15), from the store's record of every
reservation's status moves.

Theory of operation. Every move of a reservation, whoever makes it (the API, the lifecycle,
the command line), is a row of ``reservation_events`` with a growing id. ``flush`` reads the
rows after a cursor, builds their points (a ``booking`` point per move; a ``usage`` point for
a move that ends a booking with use to meter: completed, no-show, preempted, cancelled after
its start) and appends them to the outbox in ONE transaction with the cursor's new value
(kept in the store's ``reports`` as kind ``booking_events``, whose ``period_ms`` is the last
event id written). So each move gives its points exactly once: a killed gateway resumes
after the last committed batch, and the outbox keeps them until InfluxDB has them.

Usage is metered at the move's own time (``at_ms``) from the machine's confirmed states, so
a later replay of the same history meters the same; ``charge`` comes from a rule the gateway
gives (``Gateway._charge``: the owner's ``booking.charge``, as ``GET /api/usage`` charges;
0.0 without one). ``correct`` writes a
booking's usage again (same series and time: the new point replaces the old one).
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Mapping
from typing import Final

import structlog

from pilotline.gateway.clock import Clock
from pilotline.gateway.sinks.influx.bookings import booking_row, usage_row
from pilotline.gateway.sinks.influx.drain import OutboxDrainer
from pilotline.gateway.store import Store
from pilotline.rules.booking import Reservation, Status, Usage
from pilotline.rules.booking.codes import ENDED, ends_use
from pilotline.rules.spec import MachineSpec

log = structlog.get_logger("pilotline.gateway.bookings")

BOOKING_EVENTS_REPORT: Final = "booking_events"
"""``reports.kind`` whose latest ``period_ms`` is the last ``reservation_events`` id written
as points."""
BATCH: Final = 500
"""Status moves per transaction (a first run after ``influx:`` was added writes the whole
history, a batch at a time)."""
INTERVAL_S: Final = 1.0
_METERED: Final = ENDED | {Status.CANCELLED}  # moves that may need usage metered

Meter = Callable[[Reservation, int], Usage]
"""A reservation's use by a time, from the machine's confirmed states."""
ChargeRule = Callable[[Reservation, Usage, Status], float]
"""What the tenant is charged for a reservation that ended in a status with that use."""


def no_charge(res: Reservation, usage: Usage, status: Status) -> float:
    """No charge rule given: 0.0."""
    return 0.0


class BookingPoints:
    def __init__(
        self,
        *,
        store: Store,
        site: str,
        machines: Mapping[str, MachineSpec],
        meter: Meter,
        clock_ms: Clock,
        commit: Callable[[], None],
        drainer: OutboxDrainer | None,
        charge: ChargeRule = no_charge,
        batch: int = BATCH,
    ) -> None:
        """``commit``: makes what is staged durable first (usage reads the state history);
        ``drainer`` is told when points wait."""
        self._store = store
        self._site = site
        self._machines = machines
        self._meter = meter
        self._clock_ms = clock_ms
        self._commit = commit
        self._drainer = drainer
        self.charge = charge
        self._batch = batch

    def _where(self, res: Reservation) -> tuple[str, str]:
        spec = self._machines.get(res.machine)
        return ("", "") if spec is None else (spec.zone, spec.owner)

    def _usage_row(self, res: Reservation, status: Status, at_ms: int) -> tuple[int, str]:
        usage = self._meter(res, at_ms)
        zone, owner = self._where(res)
        return usage_row(
            self._site, zone, owner, res, usage,
            charge=self.charge(res, usage, status), no_show=status is Status.NO_SHOW,
        )

    def flush(self) -> int:
        """Write the points of every status move not written yet; how many moves."""
        store = self._store
        book = store.reservations()
        done = 0
        committed = False
        while True:
            cursor = store.last_report(BOOKING_EVENTS_REPORT) or 0
            moves = book.events_since(cursor, self._batch)
            if not moves:
                break
            if not committed and any(s in _METERED for _, _, s, _ in moves):
                self._commit()  # the state history must include what is staged
                committed = True
            rows: list[tuple[int, str]] = []
            for _, rid, status, at_ms in moves:
                res = book.get(rid)
                if res is None:  # rows are never deleted
                    continue
                zone, owner = self._where(res)
                rows.append(booking_row(self._site, zone, owner, res, status))
                if ends_use(status, at_ms, res.start_ms):
                    rows.append(self._usage_row(res, status, at_ms))
            store.commit_report(
                BOOKING_EVENTS_REPORT, moves[-1][0], lines=rows, now_ms=self._clock_ms()
            )
            done += len(moves)
        if done and self._drainer is not None:
            self._drainer.notify()
        return done

    def correct(self, rid: str, now_ms: int | None = None) -> bool:
        """Meter ended reservation ``rid`` again by ``now_ms`` (late data, an overrun that
        went on) and write its ``usage`` point again; False if it has not ended with use."""
        res = self._store.reservations().get(rid)
        if res is None:
            return False
        ended = [
            (status, at) for status, at, _, _ in self._store.reservations().events(rid)
            if ends_use(status, at, res.start_ms)
        ]
        if not ended:
            return False
        self._commit()
        status, at_ms = ended[-1]
        now = self._clock_ms() if now_ms is None else now_ms
        # only a completed booking's overrun goes on after it ended; the others are metered
        # to their end again (a no-show's machine is someone else's afterwards)
        until = max(now, at_ms) if status is Status.COMPLETED else at_ms
        self._store.commit(now_ms=self._clock_ms(), lines=[self._usage_row(res, status, until)])
        if self._drainer is not None:
            self._drainer.notify()
        return True

    async def run(self, interval_s: float = INTERVAL_S) -> None:
        """``flush`` every ``interval_s``. A failed run (the file locked, a full disk) is
        logged and retried: the cursor did not move, so nothing is skipped."""
        while True:
            try:
                self.flush()
            except sqlite3.Error as exc:
                log.warning("booking.points_failed", error=str(exc))
            await asyncio.sleep(interval_s)
