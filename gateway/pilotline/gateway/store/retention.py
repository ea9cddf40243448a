"""Pruning the history tables: rows older than a cutoff go, a small batch per transaction.

Each ``prune`` call deletes at most ``limit`` rows of one table in its own short
transaction, so the gateway's commits (same connection, same thread) wait for one batch at
most; the caller (service/pruning.py) returns to the event loop between batches and decides
the cutoffs. What each statement keeps whatever its age:

- ``state_history``: per machine, the latest change at or before the cutoff (the state a
  period starting at the cutoff begins in) and everything after it; so each machine's latest
  state is always kept, and utilization over any period from the cutoff on is unchanged;
- ``idle_windows``: open windows (``end_ms`` NULL), however old their start;
- ``reports``: the latest written period of each kind (where the next report starts);
- ``alert_acks``, ``quarantine``, ``dead_letter``: nothing (an audit trail and rejected input,
  kept for an operator to read, no more).

The outbox, the notification queue and the current tables (machines, capacity, checkpoints)
are never pruned: their rows are deleted when they have done their job.
"""

from __future__ import annotations

import sqlite3
from typing import Final, Literal

from pilotline.gateway.store.db import Transaction

__all__ = ["PRUNED_TABLES", "PrunedTable", "Retention"]

PrunedTable = Literal[
    "state_history", "idle_windows", "alert_acks", "reports", "quarantine", "dead_letter"
]

# Each: the rowids of up to ``limit`` rows older than ``cutoff`` that may go (parameters:
# cutoff, limit). DELETE ... LIMIT needs a compile option; a subquery does not.
_PRUNABLE: Final[dict[PrunedTable, str]] = {
    "state_history": "SELECT h.rowid FROM state_history h WHERE h.ts_ms < :cutoff AND EXISTS"
    " (SELECT 1 FROM state_history n WHERE n.machine = h.machine AND n.ts_ms > h.ts_ms"
    " AND n.ts_ms <= :cutoff) LIMIT :limit",
    # end_ms < cutoff implies start_ms < cutoff, which the start index finds
    "idle_windows": "SELECT rowid FROM idle_windows WHERE start_ms < :cutoff"
    " AND end_ms IS NOT NULL AND end_ms < :cutoff LIMIT :limit",
    "alert_acks": "SELECT rowid FROM alert_acks WHERE acked_ms < :cutoff LIMIT :limit",
    "reports": "SELECT r.rowid FROM reports r WHERE r.period_ms < :cutoff AND r.period_ms <"
    " (SELECT MAX(l.period_ms) FROM reports l WHERE l.kind = r.kind) LIMIT :limit",
    "quarantine": "SELECT rowid FROM quarantine WHERE arrival_ms < :cutoff LIMIT :limit",
    "dead_letter": "SELECT rowid FROM dead_letter WHERE dead_ms < :cutoff LIMIT :limit",
}
PRUNED_TABLES: Final = tuple(_PRUNABLE)


class Retention:
    """Deletes old rows of the history tables on the store's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def prune(self, table: PrunedTable, cutoff_ms: int, limit: int) -> int:
        """Delete up to ``limit`` rows of ``table`` older than ``cutoff_ms`` that nothing
        needs (see the module's list), in one transaction; returns how many went."""
        statement = (
            f"DELETE FROM {table} WHERE rowid IN ({_PRUNABLE[table]})"  # noqa: S608 (fixed table names, values bound) # nosec B608
        )
        with Transaction(self._db):
            cursor = self._db.execute(statement, {"cutoff": cutoff_ms, "limit": limit})
        return cursor.rowcount
