"""What each machine's tracker needs to resume after a restart: its ``Checkpoint`` (state,
open window, pending candidate, staleness clock).

Each commit appends the checkpoints of the machines it touched as one ``resume_log`` row in
its transaction (one append instead of an upsert per machine; measured:
benchmarks/README.md). Every ``RESUME_COMPACT_ROWS`` commits (and when the store opens) the
latest one per machine is folded into ``resume`` (one row per machine) and the log emptied,
in one transaction.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence
from typing import Any, Final

import orjson

from pilotline.gateway.store.db import Transaction, rows
from pilotline.rules.machine import Checkpoint
from pilotline.rules.states import State

RESUME_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS resume (
        machine TEXT PRIMARY KEY,
        state TEXT NOT NULL,
        since_ms INTEGER,
        window_start_ms INTEGER,
        window_offered INTEGER NOT NULL,
        last_seen_ms INTEGER,
        last_idle_ms INTEGER,
        last_ts_ms INTEGER,
        raw TEXT,
        pending TEXT,
        pending_since_ms INTEGER NOT NULL
    )""",
)
"""Schema version 4."""
RESUME_LOG_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS resume_log (
        id INTEGER PRIMARY KEY,
        data TEXT NOT NULL
    )""",
)
"""Schema version 7: each row a JSON array of ``_resume_row``s (one commit's)."""
RESUME_COMPACT_ROWS = 1_000
"""``resume_log`` rows (commits) after which the log is folded into ``resume``."""
_UPSERT_RESUME: Final = """
INSERT OR REPLACE INTO resume (machine, state, since_ms, window_start_ms, window_offered,
    last_seen_ms, last_idle_ms, last_ts_ms, raw, pending, pending_since_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""

_STATE_VALUE: Final[dict[State | None, str | None]] = {
    None: None,
    **{s: s.value for s in State},
}
"""``State.value`` by dict: enum members' ``.value`` is a slow descriptor in Python 3.11."""


def _resume_row(cp: Checkpoint) -> tuple[Any, ...]:
    value = _STATE_VALUE
    return (
        cp.machine,
        value[cp.state],
        cp.since_ms,
        cp.window_start_ms,
        int(cp.window_offered),
        cp.last_seen_ms,
        cp.last_idle_ms,
        cp.last_ts_ms,
        value[cp.raw],
        value[cp.pending],
        cp.pending_since_ms,
    )


def _checkpoint(row: Sequence[Any]) -> Checkpoint:
    """The inverse of ``_resume_row``."""
    return Checkpoint(
        row[0],
        State(row[1]),
        row[2],
        row[3],
        bool(row[4]),
        row[5],
        row[6],
        row[7],
        None if row[8] is None else State(row[8]),
        None if row[9] is None else State(row[9]),
        row[10],
    )


class ResumePoints:
    """``resume`` and ``resume_log`` on the store's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._log_rows = 0
        self._latest: dict[str, tuple[Any, ...]] = {}  # since the last compaction

    def keep(self, tx: Transaction, checkpoints: Sequence[Checkpoint]) -> None:
        """Inside ``tx``: append ``checkpoints`` to the log, folding it when it is long."""
        rows = [_resume_row(cp) for cp in checkpoints]
        data = orjson.dumps(rows).decode()
        self._db.execute("INSERT INTO resume_log (data) VALUES (?)", (data,))
        if self._log_rows + 1 >= RESUME_COMPACT_ROWS:
            self._fold({**self._latest, **{row[0]: row for row in rows}})
            tx.after_commit(self._folded)
        else:
            tx.after_commit(lambda: self._logged(rows))

    def _logged(self, rows: list[tuple[Any, ...]]) -> None:
        self._log_rows += 1
        for row in rows:
            self._latest[row[0]] = row

    def _folded(self) -> None:
        self._latest.clear()
        self._log_rows = 0

    def _fold(self, latest: dict[str, tuple[Any, ...]]) -> None:
        """Inside a transaction: the latest checkpoints into ``resume``, the log emptied."""
        self._db.executemany(_UPSERT_RESUME, list(latest.values()))
        self._db.execute("DELETE FROM resume_log")

    def compact(self) -> None:
        """Fold what an earlier run left in ``resume_log`` into ``resume`` (at open)."""
        db = self._db
        with Transaction(db):
            latest: dict[str, tuple[Any, ...]] = {}
            for (data,) in db.execute("SELECT data FROM resume_log ORDER BY id").fetchall():
                for row in orjson.loads(data):
                    latest[row[0]] = tuple(row)
            if latest:
                self._fold(latest)

    def points(self) -> list[Checkpoint]:
        """Every machine's last checkpoint, for a restarted gateway.

        A machine with a row in ``machines`` but none here (a store written before schema
        version 4) resumes from that row and its open window, with its last sample taken to
        be its last state change: it then goes ``offline`` as soon as that is older than
        ``stale_after``, which also closes a window a killed older gateway left open. (It
        reads the plant's ``machines`` and ``idle_windows``; only ``Plant`` writes them.)"""
        points = {
            row["machine"]: Checkpoint(
                row["machine"],
                State(row["state"]),
                row["since_ms"],
                row["window_start_ms"],
                bool(row["window_offered"]),
                row["last_seen_ms"],
                row["last_idle_ms"],
                row["last_ts_ms"],
                None if row["raw"] is None else State(row["raw"]),
                None if row["pending"] is None else State(row["pending"]),
                row["pending_since_ms"],
            )
            for row in rows(self._db, "SELECT * FROM resume ORDER BY machine")
        }
        for (data,) in self._db.execute("SELECT data FROM resume_log ORDER BY id").fetchall():
            for row in orjson.loads(data):
                points[row[0]] = _checkpoint(row)
        for row in rows(
            self._db,
            "SELECT m.machine, m.state, m.since_ms, MAX(w.start_ms) AS window_start_ms"
            " FROM machines m LEFT JOIN idle_windows w"
            " ON w.machine = m.machine AND w.end_ms IS NULL GROUP BY m.machine",
        ):
            if row["machine"] in points:
                continue
            state = State(row["state"])
            since = row["since_ms"]
            points[row["machine"]] = Checkpoint(
                row["machine"],
                state,
                since,
                row["window_start_ms"],
                False,
                since,
                since if state is State.IDLE else None,
                since,
                state if state is not State.OFFLINE else None,
                None,
                0,
            )
        return [points[m] for m in sorted(points)]
