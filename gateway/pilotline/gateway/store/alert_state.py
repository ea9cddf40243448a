"""What the alert machinery keeps across restarts, in the embedded store's SQLite file.

- ``alert_state``: the pure cores' checkpoints (``Alerts.checkpoint()`` and
  ``Dispatcher.checkpoint()``) as JSON, one row per core. Without them a restart would forget
  which alerts are firing and which were notified, and every firing alert would fire and be
  notified again after its ``for:``.
- ``silences``: every silence set through the API, kept after it ends (the list shows recent
  ones) until it is older than ``SILENCE_KEEP_MS``. A row that cannot make a valid
  ``Silence`` (one an older version stored, or a file edited by hand) is left out of what
  ``silences()`` returns, with a warning, so neither the API's list nor a restart fails on it.
- ``alert_acks``: who acknowledged which alert and when (an audit trail; the dispatcher's
  checkpoint holds the acks that are in force).

Same connection and thread as ``Store`` (the event loop's). Each write here is one statement,
committed by itself (db.py), so an acknowledgement or a silence is durable when the API
answers; ``put`` writes the checkpoints inside the store's commit instead, with everything
the same batch of work caused. This class is the only writer of the three tables.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Final

import structlog

from pilotline.gateway.store.db import Transaction
from pilotline.rules.dispatch import Silence
from pilotline.rules.labels import LABELS

log = structlog.get_logger("pilotline.gateway.store")

SILENCE_KEEP_MS: Final = 30 * 86_400_000
"""Ended silences are listed (with ``expired=true``) for 30 days, then forgotten."""

ALERT_STATE_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS alert_state (
        core TEXT PRIMARY KEY,
        data TEXT NOT NULL,
        saved_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS silences (
        id TEXT PRIMARY KEY,
        matchers TEXT NOT NULL,
        starts_ms INTEGER NOT NULL,
        ends_ms INTEGER NOT NULL,
        created_by TEXT NOT NULL,
        comment TEXT NOT NULL,
        created_ms INTEGER NOT NULL
    )""",
    """CREATE TABLE IF NOT EXISTS alert_acks (
        id INTEGER PRIMARY KEY,
        rule TEXT NOT NULL,
        machine TEXT NOT NULL,
        acked_by TEXT NOT NULL,
        acked_ms INTEGER NOT NULL,
        comment TEXT NOT NULL
    )""",
)


_SAVE: Final = "INSERT OR REPLACE INTO alert_state (core, data, saved_ms) VALUES (?, ?, ?)"


@dataclass(frozen=True, slots=True)
class StoredSilence:
    silence: Silence
    created_ms: int


class AlertStateStore:
    """The three tables above on the store's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    # -- checkpoints -------------------------------------------------------------------------

    def save(self, core: str, data: Mapping[str, Any], now_ms: int) -> None:
        """Keep ``core``'s checkpoint now (an operator action: its own transaction)."""
        text = json.dumps(data, separators=(",", ":"), sort_keys=True)
        self._db.execute(_SAVE, (core, text, now_ms))

    def put(self, tx: Transaction, checkpoints: Sequence[tuple[str, str]], now_ms: int) -> None:
        """Inside ``tx`` (the store's commit): keep ``(core, checkpoint JSON)`` rows."""
        self._db.executemany(_SAVE, [(core, data, now_ms) for core, data in checkpoints])

    def load(self, core: str) -> dict[str, Any] | None:
        row = self._db.execute("SELECT data FROM alert_state WHERE core = ?", (core,)).fetchone()
        if row is None:
            return None
        try:
            data = json.loads(row[0])
        except ValueError:
            return None
        return data if isinstance(data, dict) else None

    # -- silences ----------------------------------------------------------------------------

    def add_silence(self, silence: Silence, created_ms: int) -> None:
        self._db.execute(
            "INSERT INTO silences (id, matchers, starts_ms, ends_ms, created_by, comment,"
            " created_ms) VALUES (?, ?, ?, ?, ?, ?, ?)",
            (
                silence.id,
                json.dumps(dict(silence.matchers), sort_keys=True),
                silence.starts_ms,
                silence.ends_ms,
                silence.created_by,
                silence.comment,
                created_ms,
            ),
        )

    def end_silence(self, silence_id: str, at_ms: int) -> bool:
        """End a silence now (if it has not ended yet); False if there is no such silence."""
        cursor = self._db.execute(
            "UPDATE silences SET ends_ms = MIN(ends_ms, ?) WHERE id = ?", (at_ms, silence_id)
        )
        return cursor.rowcount > 0

    def silences(self, now_ms: int) -> list[StoredSilence]:
        """Active, future and recently ended silences, newest first; older ones are deleted."""
        self._db.execute("DELETE FROM silences WHERE ends_ms < ?", (now_ms - SILENCE_KEEP_MS,))
        rows = self._db.execute(
            "SELECT id, matchers, starts_ms, ends_ms, created_by, comment, created_ms"
            " FROM silences ORDER BY created_ms DESC, id"
        ).fetchall()
        out = []
        for row in rows:
            try:
                out.append(_stored_silence(tuple(row)))
            except ValueError as e:
                log.warning("alerts.silence_unreadable", silence=str(row[0])[:64], error=str(e))
        return out

    # -- acknowledgements ---------------------------------------------------------------------

    def record_ack(self, rule: str, machine: str, by: str, at_ms: int, comment: str) -> None:
        self._db.execute(
            "INSERT INTO alert_acks (rule, machine, acked_by, acked_ms, comment)"
            " VALUES (?, ?, ?, ?, ?)",
            (rule, machine, by, at_ms, comment),
        )


def _stored_silence(row: tuple[Any, ...]) -> StoredSilence:
    """A ``silences`` row as a valid silence, or ``ValueError`` saying what is wrong."""
    silence_id, matchers_json, starts_ms, ends_ms, created_by, comment, created_ms = row
    try:
        matchers = json.loads(matchers_json)
    except (TypeError, ValueError):
        raise ValueError("matchers are not JSON") from None
    if not isinstance(matchers, dict) or not all(
        isinstance(k, str) and isinstance(v, str) for k, v in matchers.items()
    ):
        raise ValueError("matchers are not an object of strings")
    # What the dispatcher would refuse when the gateway restarts. (A silence ended before it
    # started has ends_ms <= starts_ms: that is kept, it is listed as ended.)
    if not matchers:
        raise ValueError("no matchers")
    unknown = sorted(set(matchers) - set(LABELS))
    if unknown:
        raise ValueError(f"unknown label {unknown[0]!r}")
    texts = (silence_id, created_by, comment)
    numbers = (starts_ms, ends_ms, created_ms)
    if not all(isinstance(t, str) for t in texts) or not all(type(n) is int for n in numbers):
        raise ValueError("a column has the wrong type")
    return StoredSilence(
        Silence(silence_id, matchers, starts_ms, ends_ms, created_by, comment), created_ms
    )
