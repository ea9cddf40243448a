"""Which reservation events have been turned into booking notifications: one cursor, the id
of the last ``reservation_events`` row handled (schema version 9).

Notifying from the events, not from each place a status moves (the API's routes, the
lifecycle, ``pilotline booking cancel`` in another process), means one place decides, and a
move made anywhere is told. ``queue`` inserts the notification rows into the durable
``notifications`` outbox and advances the cursor in ONE transaction, so each event is queued
exactly once: a gateway killed before that commit reads the same events again after the
restart, one killed after it finds the rows in the outbox (the senders deliver them at least
once, as alerts).

The cursor starts at the last event that exists when the table is created, so a store that
already holds bookings does not notify its whole history on its first start with this
version. Kept apart from any other reader of ``reservation_events`` (the InfluxDB points of
booking transitions keep their own position): each moves at its own pace.

Reminders (``starting_soon``, ``overrun``: schema version 11) are no status move, so no event
row marks them: ``booking_reminders`` keeps one row per (reservation, kind) told, inserted in
the same transaction as its notification rows, so each is told once across restarts.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Final

from pilotline.gateway.store.db import Transaction
from pilotline.gateway.store.notifications import Notifications
from pilotline.rules.booking import Reservation, Status

__all__ = ["BOOKING_NOTICES_SCHEMA", "BOOKING_REMINDERS_SCHEMA", "BookingEvent", "BookingNotices"]

BOOKING_NOTICES_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS booking_notices_cursor (
        id INTEGER PRIMARY KEY CHECK (id = 1),
        last_event INTEGER NOT NULL
    )""",
    # Once, when the table is new: start after the events that already exist.
    """INSERT OR IGNORE INTO booking_notices_cursor (id, last_event)
        SELECT 1, COALESCE(MAX(id), 0) FROM reservation_events""",
)

BOOKING_REMINDERS_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS booking_reminders (
        reservation TEXT NOT NULL,
        kind TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        PRIMARY KEY (reservation, kind)
    )""",
)


@dataclass(frozen=True, slots=True)
class BookingEvent:
    """One row of ``reservation_events`` with its reservation as it is now, and the status
    it came from (None for the first event, ``held``)."""

    id: int
    status: Status
    previous: Status | None
    at_ms: int
    by: str
    note: str
    reservation: Reservation


class BookingNotices:
    """The ``booking_notices_cursor`` table on the store's connection."""

    def __init__(self, db: sqlite3.Connection, notifications: Notifications) -> None:
        self._db = db
        self._notifications = notifications

    def position(self) -> int:
        row = self._db.execute("SELECT last_event FROM booking_notices_cursor").fetchone()
        return 0 if row is None else int(row[0])

    def pending(self, after: int, limit: int = 500) -> list[BookingEvent]:
        """The events after ``after`` (the cursor's ``position``), oldest first, at most
        ``limit``."""
        rows = self._db.execute(
            """SELECT e.id, e.status, e.at_ms, e.by, e.note,
                      (SELECT p.status FROM reservation_events p
                        WHERE p.reservation = e.reservation AND p.id < e.id
                        ORDER BY p.id DESC LIMIT 1),
                      r.id, r.machine, r.tenant, r.start_ms, r.end_ms, r.status, r.created_ms,
                      r.predecessor, r.purpose, r.hold_until_ms
                 FROM reservation_events e JOIN reservations r ON r.id = e.reservation
                WHERE e.id > ? ORDER BY e.id LIMIT ?""",
            (after, limit),
        ).fetchall()
        return [
            BookingEvent(
                id=int(row[0]),
                status=Status(row[1]),
                previous=None if row[5] is None else Status(row[5]),
                at_ms=int(row[2]),
                by=str(row[3]),
                note=str(row[4]),
                reservation=Reservation(
                    id=str(row[6]), machine=str(row[7]), tenant=str(row[8]),
                    start_ms=int(row[9]), end_ms=int(row[10]), status=Status(row[11]),
                    created_ms=int(row[12]),
                    predecessor=None if row[13] is None else str(row[13]),
                    purpose=str(row[14]),
                    hold_until_ms=None if row[15] is None else int(row[15]),
                ),
            )
            for row in rows
        ]

    def queue(
        self, rows: Sequence[tuple[str, str]], *, after: int, upto: int, now_ms: int
    ) -> bool:
        """In one transaction: queue ``(channel, payload JSON)`` rows and move the cursor from
        ``after`` to ``upto`` (the last event they cover). False, and nothing written, if the
        cursor is no longer at ``after`` (another process handled those events)."""
        with Transaction(self._db) as tx:
            moved = self._db.execute(
                "UPDATE booking_notices_cursor SET last_event = ? WHERE last_event = ?",
                (upto, after),
            ).rowcount
            if not moved:
                return False
            if rows:
                self._notifications.queue(tx, rows, now_ms)
        return True

    def reminded(self, kind: str, reservations: Sequence[str]) -> set[str]:
        """Which of ``reservations`` (the few due at one run) were already told ``kind``."""
        return {
            rid for rid in reservations
            if self._db.execute(
                "SELECT 1 FROM booking_reminders WHERE reservation = ? AND kind = ?", (rid, kind)
            ).fetchone() is not None
        }

    def remind(
        self, kind: str, reservation: str, rows: Sequence[tuple[str, str]], *, now_ms: int
    ) -> bool:
        """In one transaction: mark ``reservation`` told ``kind`` and queue its ``(channel,
        payload JSON)`` rows. False, and nothing written, if it was told already (by an
        earlier run, or another process)."""
        with Transaction(self._db) as tx:
            marked = self._db.execute(
                "INSERT OR IGNORE INTO booking_reminders (reservation, kind, at_ms)"
                " VALUES (?, ?, ?)",
                (reservation, kind, now_ms),
            ).rowcount
            if not marked:
                return False
            if rows:
                self._notifications.queue(tx, rows, now_ms)
        return True
