"""The notification outbox (schema version 5): one row per (alert transition, channel),
inserted in the commit that staged the transition (so a notification is queued exactly when
the dispatcher's record that it was sent is kept) and deleted once the channel accepted it
(``NotificationSender``, notify/sender.py); ``next_ms`` is when to try again after a failure.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Final

from pilotline.gateway.store.db import Transaction

NOTIFICATIONS_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS notifications (
        id INTEGER PRIMARY KEY,
        channel TEXT NOT NULL,
        payload TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        attempts INTEGER NOT NULL DEFAULT 0,
        next_ms INTEGER NOT NULL
    )""",
    "CREATE INDEX IF NOT EXISTS notifications_channel ON notifications (channel, id)",
)


class Notifications:
    """The ``notifications`` table on the store's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def queue(self, tx: Transaction, notifications: Sequence[tuple[str, str]], now_ms: int) -> None:
        """Inside ``tx``: queue ``(channel, payload JSON)`` rows, due at once."""
        self._db.executemany(
            "INSERT INTO notifications (channel, payload, created_ms, attempts, next_ms)"
            " VALUES (?, ?, ?, 0, ?)",
            [(channel, payload, now_ms, now_ms) for channel, payload in notifications],
        )

    def oldest(self, channel: str) -> tuple[int, str, int, int] | None:
        """The channel's oldest waiting notification ``(id, payload, attempts, next_ms)``."""
        row = self._db.execute(
            "SELECT id, payload, attempts, next_ms FROM notifications WHERE channel = ?"
            " ORDER BY id LIMIT 1",
            (channel,),
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]), int(row[3]))

    def delete(self, notification_id: int) -> None:
        self._db.execute("DELETE FROM notifications WHERE id = ?", (notification_id,))

    def retry(self, notification_id: int, *, next_ms: int) -> None:
        self._db.execute(
            "UPDATE notifications SET attempts = attempts + 1, next_ms = ? WHERE id = ?",
            (next_ms, notification_id),
        )

    def waiting(self, channel: str | None = None) -> int:
        if channel is None:
            row = self._db.execute("SELECT COUNT(*) FROM notifications").fetchone()
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM notifications WHERE channel = ?", (channel,)
            ).fetchone()
        return int(row[0])
