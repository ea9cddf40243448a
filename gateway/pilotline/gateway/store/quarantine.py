"""Input the gateway would not use (malformed, out of order, from the future, too large),
kept for an operator to look at: the newest ``limit`` rows, each with its first bytes."""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, Final

from pilotline.gateway.store.db import Transaction, rows

QUARANTINE_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    arrival_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    machine TEXT,
    reason TEXT NOT NULL,
    head BLOB NOT NULL
)""",
)
"""Schema version 1."""
HEAD_LIMIT: Final = 1024
"""Bytes of a quarantined payload kept: enough to see what it was, bounded in size."""


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """Input the gateway would not use, kept (its first bytes) for an operator to look at."""

    arrival_ms: int
    source: str
    topic: str
    machine: str | None
    reason: str
    head: bytes


class Quarantine:
    """The ``quarantine`` table on the store's connection."""

    def __init__(self, db: sqlite3.Connection, *, limit: int) -> None:
        self._db = db
        self.limit = limit

    def insert(self, tx: Transaction, quarantined: Sequence[QuarantineRow]) -> None:
        """Inside ``tx``: keep ``quarantined`` and forget all but the newest ``limit`` rows."""
        db = self._db
        db.executemany(
            "INSERT INTO quarantine (arrival_ms, source, topic, machine, reason, head)"
            " VALUES (?, ?, ?, ?, ?, ?)",
            [
                (q.arrival_ms, q.source, q.topic, q.machine, q.reason, bytes(q.head[:HEAD_LIMIT]))
                for q in quarantined
            ],
        )
        # ids only grow (AUTOINCREMENT): everything below max - limit is older.
        db.execute(
            "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?",
            (self.limit,),
        )

    def newest(self, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        """Newest first; ``before_id``: only older than that row (the API's cursor)."""
        if before_id is None:
            return rows(self._db, "SELECT * FROM quarantine ORDER BY id DESC LIMIT ?", (limit,))
        return rows(
            self._db,
            "SELECT * FROM quarantine WHERE id < ? ORDER BY id DESC LIMIT ?",
            (before_id, limit),
        )

    def count(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        return count
