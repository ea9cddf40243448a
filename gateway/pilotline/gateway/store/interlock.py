"""The interlock signals last sent (issue 15), one row per machine (schema version 9).

A signal's ``seq`` rises by one each time what it says changes, and never goes back, not
even across a restart: the row is written (committed) before the signal goes out, so a
gateway killed after publishing resumes from a seq at least as high as any a subscriber has
seen. A signal that says the same again (a restart, a reconnect) keeps its seq.
"""

from __future__ import annotations

import sqlite3
from dataclasses import dataclass
from typing import Final

from pilotline.gateway.store.db import Transaction
from pilotline.rules.booking.interlock import Signal

__all__ = ["INTERLOCK_SCHEMA", "InterlockSignals", "Sent"]

INTERLOCK_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS interlock_signals (
        machine TEXT PRIMARY KEY,
        seq INTEGER NOT NULL,
        enabled INTEGER NOT NULL,
        reservation TEXT,
        tenant TEXT,
        until_ms INTEGER,
        at_ms INTEGER NOT NULL
    )""",
)


@dataclass(frozen=True, slots=True)
class Sent:
    """A machine's signal as last decided: what it said, its seq, and when it changed."""

    signal: Signal
    seq: int
    at_ms: int


class InterlockSignals:
    """The ``interlock_signals`` table on the store's connection (its only writer)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def last(self) -> dict[str, Sent]:
        rows = self._db.execute(
            "SELECT machine, seq, enabled, reservation, tenant, until_ms, at_ms"
            " FROM interlock_signals"
        ).fetchall()
        return {
            str(machine): Sent(
                Signal(
                    bool(enabled),
                    None if rid is None else str(rid),
                    None if tenant is None else str(tenant),
                    None if until is None else int(until),
                ),
                int(seq),
                int(at),
            )
            for machine, seq, enabled, rid, tenant, until, at in rows
        }

    def record(self, machine: str, signal: Signal, at_ms: int) -> Sent:
        """``machine``'s signal changed to ``signal``: its next seq, committed."""
        with Transaction(self._db):
            row = self._db.execute(
                "SELECT seq FROM interlock_signals WHERE machine = ?", (machine,)
            ).fetchone()
            seq = (0 if row is None else int(row[0])) + 1
            self._db.execute(
                "INSERT OR REPLACE INTO interlock_signals"
                " (machine, seq, enabled, reservation, tenant, until_ms, at_ms)"
                " VALUES (?, ?, ?, ?, ?, ?, ?)",
                (machine, seq, int(signal.enabled), signal.reservation, signal.tenant,
                 signal.until_ms, at_ms),
            )
        return Sent(signal, seq, at_ms)

    def bookings_version(self) -> int:
        """A number that rises whenever a reservation is made or changes status: the id of
        the latest ``reservation_events`` row (each step of a booking appends one), read
        here so the interlock sees a booking change within a poll, with no hook in the
        routes that make it."""
        row = self._db.execute("SELECT MAX(id) FROM reservation_events").fetchone()
        return 0 if row is None or row[0] is None else int(row[0])
