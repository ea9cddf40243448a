"""The periodic reports already written (schema version 3; the daily ``utilization``
points), so a restarted gateway neither skips nor repeats a period."""

from __future__ import annotations

import sqlite3
from typing import Final

from pilotline.gateway.store.db import Transaction

REPORTS_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS reports (
        kind TEXT NOT NULL,
        period_ms INTEGER NOT NULL,
        written_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, period_ms)
    )""",
)


class Reports:
    """The ``reports`` table on the store's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def mark_written(self, tx: Transaction, kind: str, period_ms: int, now_ms: int) -> None:
        """Inside ``tx`` (with the report's lines): ``period_ms`` of ``kind`` is done."""
        self._db.execute(
            "INSERT OR REPLACE INTO reports (kind, period_ms, written_ms) VALUES (?, ?, ?)",
            (kind, period_ms, now_ms),
        )

    def last(self, kind: str) -> int | None:
        """The latest period of ``kind`` already written, or None."""
        value = self._db.execute(
            "SELECT MAX(period_ms) FROM reports WHERE kind = ?", (kind,)
        ).fetchone()[0]
        return None if value is None else int(value)
