"""One SQLite file: the durable outbox of InfluxDB lines and the embedded store.

Theory of operation: the gateway calls ``commit()`` once per batch of work (a sample's
lines and events, a timer tick's events, quarantined input). It is ONE transaction: lines
are appended to the outbox, the embedded tables are brought up to date and quarantine rows
are inserted, or nothing is. When ``commit()`` returns the data is durable: in WAL mode
with ``synchronous=NORMAL`` a committed transaction survives a killed process (it is in the
WAL file the OS holds); ``synchronous="FULL"`` also survives a power loss, at the price of
an fsync per commit.

The outbox is drained by ``OutboxDrainer`` (drain.py) oldest first: ``outbox_peek``, write,
and ``outbox_delete`` only after the store acknowledged. Lines InfluxDB refuses for good
(a 400 on a line) move to ``dead_letter`` so they are kept, counted and inspectable, never
silently dropped.

The store is used from the event-loop thread only (one connection, no locks). Reads for
the HTTP API are small indexed queries on the same connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pilotline.gateway.tokens import TOKENS_SCHEMA, TokenRegistry
from pilotline.rules.events import (
    Capacity,
    Event,
    IdleWindowClosed,
    IdleWindowOpened,
    StateChanged,
    ZoneCapacity,
)

SCHEMA_VERSION = 3
"""1: outbox, dead letters, embedded store, quarantine; 2: + api_tokens (hashed);
3: + state_history, reports (``_HISTORY_SCHEMA``).

Each step's statements are ``CREATE ... IF NOT EXISTS`` and run on every start, so steps are
independent of each other and a file of any older version is brought up to date in place."""
HEAD_LIMIT = 1024
"""Bytes of a quarantined payload kept: enough to see what it was, bounded in size."""

_SYNCHRONOUS = frozenset({"NORMAL", "FULL", "EXTRA"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
CREATE TABLE IF NOT EXISTS outbox (
    id INTEGER PRIMARY KEY,
    priority INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    line TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    dead_ms INTEGER NOT NULL,
    status INTEGER,
    error TEXT NOT NULL,
    line TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS machines (
    machine TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    state_code INTEGER NOT NULL,
    since_ms INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS idle_windows (
    machine TEXT NOT NULL,
    zone TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER,
    duration_s REAL,
    offered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (machine, start_ms)
);
CREATE INDEX IF NOT EXISTS idle_windows_start ON idle_windows (start_ms);
CREATE INDEX IF NOT EXISTS idle_windows_open ON idle_windows (start_ms) WHERE end_ms IS NULL;
CREATE TABLE IF NOT EXISTS capacity (
    machine TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    owner TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    available INTEGER NOT NULL,
    idle_for_s REAL NOT NULL,
    offered INTEGER NOT NULL
);
CREATE TABLE IF NOT EXISTS zone_capacity (
    zone TEXT NOT NULL,
    capability TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    machines INTEGER NOT NULL,
    available INTEGER NOT NULL,
    running INTEGER NOT NULL,
    down INTEGER NOT NULL,
    offline INTEGER NOT NULL,
    PRIMARY KEY (zone, capability)
);
CREATE TABLE IF NOT EXISTS quarantine (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    arrival_ms INTEGER NOT NULL,
    source TEXT NOT NULL,
    topic TEXT NOT NULL,
    machine TEXT,
    reason TEXT NOT NULL,
    head BLOB NOT NULL
);
"""

# Schema version 3: every confirmed state change (utilization is computed from it), and the
# periodic reports already written (the daily ``utilization`` points), so a restarted gateway
# neither skips nor repeats a day. Keyed by (machine, ts_ms): a replayed event overwrites
# its own row.
_HISTORY_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS state_history (
        machine TEXT NOT NULL,
        zone TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (machine, ts_ms)
    )""",
    "CREATE INDEX IF NOT EXISTS state_history_ts ON state_history (ts_ms)",
    """CREATE TABLE IF NOT EXISTS reports (
        kind TEXT NOT NULL,
        period_ms INTEGER NOT NULL,
        written_ms INTEGER NOT NULL,
        PRIMARY KEY (kind, period_ms)
    )""",
)
_UPSERT_HISTORY = """
INSERT INTO state_history (machine, zone, ts_ms, state) VALUES (?, ?, ?, ?)
ON CONFLICT (machine, ts_ms) DO UPDATE SET zone = excluded.zone, state = excluded.state
"""

# Upserts keep the latest by event time, so a replayed or late event never rolls a row back.
_UPSERT_MACHINE = """
INSERT INTO machines (machine, zone, owner, state, state_code, since_ms)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (machine) DO UPDATE SET
    zone = excluded.zone, owner = excluded.owner, state = excluded.state,
    state_code = excluded.state_code, since_ms = excluded.since_ms
WHERE excluded.since_ms >= machines.since_ms
"""
_OPEN_WINDOW = """
INSERT OR IGNORE INTO idle_windows (machine, zone, start_ms, end_ms, duration_s, offered)
VALUES (?, ?, ?, NULL, NULL, 0)
"""
_CLOSE_WINDOW = """
INSERT INTO idle_windows (machine, zone, start_ms, end_ms, duration_s, offered)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (machine, start_ms) DO UPDATE SET
    zone = excluded.zone, end_ms = excluded.end_ms, duration_s = excluded.duration_s,
    offered = excluded.offered
"""
_UPSERT_CAPACITY = """
INSERT INTO capacity (machine, zone, owner, ts_ms, available, idle_for_s, offered)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (machine) DO UPDATE SET
    zone = excluded.zone, owner = excluded.owner, ts_ms = excluded.ts_ms,
    available = excluded.available, idle_for_s = excluded.idle_for_s,
    offered = excluded.offered
WHERE excluded.ts_ms >= capacity.ts_ms
"""
_UPSERT_ZONE = """
INSERT INTO zone_capacity (zone, capability, ts_ms, machines, available, running, down, offline)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (zone, capability) DO UPDATE SET
    ts_ms = excluded.ts_ms, machines = excluded.machines, available = excluded.available,
    running = excluded.running, down = excluded.down, offline = excluded.offline
WHERE excluded.ts_ms >= zone_capacity.ts_ms
"""


class StoreError(RuntimeError):
    """The store file cannot be used (made by a newer pilotline, or not a pilotline store)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class QuarantineRow:
    """Input the gateway would not use, kept (its first bytes) for an operator to look at."""

    arrival_ms: int
    source: str
    topic: str
    machine: str | None
    reason: str
    head: bytes


class Store:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        quarantine_limit: int = 10_000,
        dead_letter_limit: int = 100_000,
    ) -> None:
        synchronous = synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        if quarantine_limit < 1 or dead_letter_limit < 1:
            raise ValueError("quarantine_limit and dead_letter_limit must be positive")
        self.path = Path(path)
        self.quarantine_limit = quarantine_limit
        self.dead_letter_limit = dead_letter_limit
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # isolation_level=None: no implicit transactions; commit() opens its own.
        self._db = sqlite3.connect(self.path, isolation_level=None)
        try:
            self._db.row_factory = sqlite3.Row
            self._db.execute("PRAGMA busy_timeout = 5000")
            mode = self._db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
            if str(mode).lower() != "wal":
                raise StoreError(self.path, f"cannot use WAL journal mode (got {mode})")
            self._db.execute(f"PRAGMA synchronous = {synchronous}")
            self._migrate()
            self._depth: int = self._db.execute("SELECT COUNT(*) FROM outbox").fetchone()[0]
        except sqlite3.DatabaseError as exc:
            self._db.close()
            raise StoreError(self.path, str(exc)) from exc
        except BaseException:
            self._db.close()
            raise

    def _migrate(self) -> None:
        """Create the schema, or check that an existing file is one this code can use."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            for statement in (*_SCHEMA.split(";"), TOKENS_SCHEMA, *_HISTORY_SCHEMA):
                if statement.strip():
                    db.execute(statement)
            row = db.execute("SELECT MAX(version) FROM schema_version").fetchone()
            version = row[0]
            if version is None:
                db.execute("INSERT INTO schema_version (version) VALUES (?)", (SCHEMA_VERSION,))
            elif version < SCHEMA_VERSION:  # the CREATE ... IF NOT EXISTS above added the rest
                db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION,))
            elif version > SCHEMA_VERSION:
                raise StoreError(
                    self.path,
                    f"schema version {version} is newer than this pilotline's "
                    f"({SCHEMA_VERSION}): upgrade pilotline or use another store file",
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

    # -- writes ------------------------------------------------------------------------

    def commit(
        self,
        *,
        now_ms: int,
        lines: Sequence[tuple[int, str]] = (),
        events: Sequence[Event] = (),
        quarantined: Sequence[QuarantineRow] = (),
        outbox: bool = True,
    ) -> None:
        """Append ``(priority, line)`` rows to the outbox (when ``outbox``: an InfluxDB sink
        exists), apply ``events`` to the embedded tables and insert ``quarantined`` rows, in
        one transaction. ``now_ms`` (wall clock) stamps the outbox rows' enqueue time."""
        machines: list[tuple[Any, ...]] = []
        opened: list[tuple[Any, ...]] = []
        closed: list[tuple[Any, ...]] = []
        capacity: list[tuple[Any, ...]] = []
        zones: list[tuple[Any, ...]] = []
        for event in events:
            if isinstance(event, StateChanged):
                machines.append(
                    (
                        event.machine,
                        event.zone,
                        event.owner,
                        event.state.value,
                        event.state.code,
                        event.ts_ms,
                    )
                )
            elif isinstance(event, IdleWindowOpened):
                opened.append((event.machine, event.zone, event.start_ms))
            elif isinstance(event, IdleWindowClosed):
                closed.append(
                    (
                        event.machine,
                        event.zone,
                        event.start_ms,
                        event.end_ms,
                        event.duration_s,
                        int(event.offered),
                    )
                )
            elif isinstance(event, Capacity):
                capacity.append(
                    (
                        event.machine,
                        event.zone,
                        event.owner,
                        event.ts_ms,
                        int(event.available),
                        float(event.idle_for_s),
                        int(event.offered),
                    )
                )
            elif isinstance(event, ZoneCapacity):
                zones.append(
                    (
                        event.zone,
                        event.capability,
                        event.ts_ms,
                        event.machines,
                        event.available,
                        event.running,
                        event.down,
                        event.offline,
                    )
                )
        append = outbox and len(lines) > 0
        if not (append or machines or opened or closed or capacity or zones or quarantined):
            return
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if append:
                db.executemany(
                    "INSERT INTO outbox (priority, enqueued_ms, line) VALUES (?, ?, ?)",
                    [(priority, now_ms, text) for priority, text in lines],
                )
            if machines:
                db.executemany(_UPSERT_MACHINE, machines)
                db.executemany(_UPSERT_HISTORY, [(m[0], m[1], m[5], m[3]) for m in machines])
            if opened:
                db.executemany(_OPEN_WINDOW, opened)
            if closed:
                db.executemany(_CLOSE_WINDOW, closed)
            if capacity:
                db.executemany(_UPSERT_CAPACITY, capacity)
            if zones:
                db.executemany(_UPSERT_ZONE, zones)
            if quarantined:
                db.executemany(
                    "INSERT INTO quarantine (arrival_ms, source, topic, machine, reason, head)"
                    " VALUES (?, ?, ?, ?, ?, ?)",
                    [
                        (
                            q.arrival_ms,
                            q.source,
                            q.topic,
                            q.machine,
                            q.reason,
                            bytes(q.head[:HEAD_LIMIT]),
                        )
                        for q in quarantined
                    ],
                )
                # ids only grow (AUTOINCREMENT): everything below max - limit is older.
                db.execute(
                    "DELETE FROM quarantine WHERE id <= (SELECT MAX(id) FROM quarantine) - ?",
                    (self.quarantine_limit,),
                )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if append:
            self._depth += len(lines)

    # -- embedded store reads -----------------------------------------------------------

    def machines(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM machines ORDER BY zone, machine")

    def capacity(self) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * FROM capacity ORDER BY zone, machine", bools=("available", "offered")
        )

    def zone_capacity(self) -> list[dict[str, Any]]:
        return self._rows("SELECT * FROM zone_capacity ORDER BY zone, capability")

    def windows(
        self,
        since_ms: int,
        machine: str | None = None,
        limit: int = 1000,
        *,
        among: Collection[str] | None = None,
    ) -> list[dict[str, Any]]:
        """Windows that started at or after ``since_ms``, or are still open; newest first.

        ``among`` keeps only these machines (an owner's, for the API)."""
        where = "(start_ms >= ? OR end_ms IS NULL)"
        params: list[Any] = [since_ms]
        if machine is not None:
            where += " AND machine = ?"
            params.append(machine)
        if among is not None:
            where += f" AND machine IN ({', '.join('?' * len(among))})"
            params.extend(among)
        params.append(limit)
        return self._rows(
            f"SELECT * FROM idle_windows WHERE {where} ORDER BY start_ms DESC, machine LIMIT ?",  # noqa: S608 (fixed clauses, values bound) # nosec B608
            params,
            bools=("offered",),
        )

    def tokens(self) -> TokenRegistry:
        """The API tokens kept in this file (``pilotline token``, the API's authentication)."""
        return TokenRegistry(self._db)

    def state_history(self, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        """State changes in ``[from_ms, to_ms)`` plus, per machine, the last one at or before
        ``from_ms`` (the state the period starts in); ordered by time, then machine."""
        return self._rows(
            "SELECT machine, zone, ts_ms, state FROM state_history h WHERE ts_ms < ? AND"
            " ts_ms >= COALESCE((SELECT MAX(ts_ms) FROM state_history p"
            " WHERE p.machine = h.machine AND p.ts_ms <= ?), ?)"
            " ORDER BY ts_ms, machine",
            (to_ms, from_ms, from_ms),
        )

    def first_state_ms(self) -> int | None:
        """The time of the earliest recorded state change, or None."""
        value = self._db.execute("SELECT MIN(ts_ms) FROM state_history").fetchone()[0]
        return None if value is None else int(value)

    def last_report(self, kind: str) -> int | None:
        """The latest period of ``kind`` already written (``commit_report``), or None."""
        value = self._db.execute(
            "SELECT MAX(period_ms) FROM reports WHERE kind = ?", (kind,)
        ).fetchone()[0]
        return None if value is None else int(value)

    def commit_report(
        self,
        kind: str,
        period_ms: int,
        *,
        lines: Sequence[tuple[int, str]],
        now_ms: int,
        outbox: bool = True,
    ) -> None:
        """Append a periodic report's lines to the outbox and record that ``period_ms`` of
        ``kind`` is done, in one transaction (a report is written once, or not at all)."""
        append = outbox and len(lines) > 0
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if append:
                db.executemany(
                    "INSERT INTO outbox (priority, enqueued_ms, line) VALUES (?, ?, ?)",
                    [(priority, now_ms, text) for priority, text in lines],
                )
            db.execute(
                "INSERT OR REPLACE INTO reports (kind, period_ms, written_ms) VALUES (?, ?, ?)",
                (kind, period_ms, now_ms),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if append:
            self._depth += len(lines)

    def quarantine(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        return self._rows("SELECT * FROM quarantine ORDER BY id DESC LIMIT ?", (limit,))

    def quarantine_count(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM quarantine").fetchone()[0]
        return count

    def _rows(
        self, sql: str, params: Sequence[Any] = (), *, bools: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        rows = [dict(row) for row in self._db.execute(sql, params)]
        for row in rows:
            for name in bools:
                row[name] = bool(row[name])
        return rows

    # -- outbox -------------------------------------------------------------------------

    def outbox_peek(self, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` ``(id, line)`` rows, oldest first."""
        cursor = self._db.execute("SELECT id, line FROM outbox ORDER BY id LIMIT ?", (limit,))
        return [(row[0], row[1]) for row in cursor]

    def outbox_delete(self, upto_id: int) -> None:
        """Forget rows with ``id <= upto_id``: call only once the store acknowledged them."""
        cursor = self._db.execute("DELETE FROM outbox WHERE id <= ?", (upto_id,))
        self._depth -= max(cursor.rowcount, 0)

    def outbox_dead_letter(
        self, upto_id: int, *, now_ms: int, status: int | None, error: str
    ) -> int:
        """Move rows with ``id <= upto_id`` to ``dead_letter``; returns how many moved."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO dead_letter"
                " (outbox_id, priority, enqueued_ms, dead_ms, status, error, line)"
                " SELECT id, priority, enqueued_ms, ?, ?, ?, line FROM outbox"
                " WHERE id <= ? ORDER BY id",
                (now_ms, status, error, upto_id),
            )
            moved = db.execute("DELETE FROM outbox WHERE id <= ?", (upto_id,)).rowcount
            db.execute(
                "DELETE FROM dead_letter WHERE id <= (SELECT MAX(id) FROM dead_letter) - ?",
                (self.dead_letter_limit,),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._depth -= moved
        return moved

    def outbox_depth(self) -> int:
        return self._depth

    def outbox_oldest_ms(self) -> int | None:
        """Wall time the oldest waiting line was enqueued, or None if the outbox is empty."""
        row = self._db.execute("SELECT enqueued_ms FROM outbox ORDER BY id LIMIT 1").fetchone()
        return None if row is None else int(row[0])

    def dead_letter(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        return self._rows("SELECT * FROM dead_letter ORDER BY id DESC LIMIT ?", (limit,))

    def dead_letter_count(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
        return count

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
