"""One SQLite file: the durable outbox of InfluxDB lines and the embedded store.

Theory of operation: the gateway calls ``commit()`` once per batch of work (a sample's
lines and events, a timer tick's events, quarantined input). It is ONE transaction: lines
are appended to the outbox, the embedded tables are brought up to date and quarantine rows
are inserted, or nothing is. When ``commit()`` returns the data is durable: in WAL mode
with ``synchronous=NORMAL`` a committed transaction survives a killed process (it is in the
WAL file the OS holds); ``synchronous="FULL"`` also survives a power loss, at the price of
an fsync per commit.

The outbox is drained by ``OutboxDrainer`` (drain.py) oldest first: ``outbox_lines``, write,
and ``outbox_delete`` only after the store acknowledged. Lines InfluxDB refuses for good
(a 400 on a line) move to ``dead_letter`` so they are kept, counted and inspectable, never
silently dropped.

**Outbox batches** (schema version 7): a commit appends its lines as one row per run of
lines of the same priority (``outbox_batch``: a JSON array of lines, ``count`` and ``skip``,
the number of leading lines already gone), not one row per line: measured 2-3x cheaper to
commit and ~10x cheaper to drain (``benchmarks/micro_hotpath.py store``). A line's id is
``batch id * LINES_PER_BATCH + index``, so ids still grow in commit order and the drainer
can stop, delete or dead-letter in the middle of a batch (``skip``). The view ``outbox``
shows one row per line (``id, priority, enqueued_ms, line``) for people and tests.

**Resume checkpoints** (schema version 7): each commit appends the checkpoints of the
machines it touched as one ``resume_log`` row in its transaction (one append instead of an
upsert per machine, which cost ~10 us each); every ``RESUME_COMPACT_ROWS`` commits (and
when the store opens) the latest one per machine is folded into ``resume`` and the log
emptied, in one transaction.

**Outbox limit** (``outbox_max_points``): when an append would take the outbox above the
limit, the oldest rows of the least important priority go first, in the same transaction:
raw telemetry (priority 1) oldest first, and only when no telemetry is left the oldest events
(priority 0: states, windows, capacity, alerts). Each drop is counted by priority
(``outbox_dropped``) and remembered (``last_drop``) for the gateway to log, export and report
in /health. Per-priority depths are kept in memory (like the total depth) so enforcing the
limit costs no COUNT; it deletes whole batches found on the ``(priority, id)`` index and
trims the oldest lines of the last one (``skip``).

The store is used from the event-loop thread only (one connection, no locks). Reads for
the HTTP API are small indexed queries on the same connection.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from pilotline.gateway.store.alert_state import ALERT_STATE_SCHEMA, AlertStateStore
from pilotline.gateway.store.tokens import TOKENS_SCHEMA, TokenRegistry
from pilotline.rules.events import (
    Capacity,
    Event,
    IdleWindowClosed,
    IdleWindowOpened,
    StateChanged,
    ZoneCapacity,
)
from pilotline.rules.machine import Checkpoint
from pilotline.rules.states import State

SCHEMA_VERSION = 7
"""1: outbox, dead letters, embedded store, quarantine; 2: + api_tokens (hashed);
3: + state_history, reports (``_HISTORY_SCHEMA``); 4: + resume (``_RESUME_SCHEMA``);
5: + notifications (``_NOTIFY_SCHEMA``); 6: + alert_state, silences, alert_acks
(``alert_state.ALERT_STATE_SCHEMA``); 7: the outbox in batches (``outbox_batch``, the view
``outbox``; older rows are moved over) and ``resume_log`` (``_OUTBOX_SCHEMA``).

Each step's statements are ``CREATE ... IF NOT EXISTS`` and run on every start, so steps are
independent of each other and a file of any older version is brought up to date in place."""
HEAD_LIMIT = 1024
"""Bytes of a quarantined payload kept: enough to see what it was, bounded in size."""

_SYNCHRONOUS = frozenset({"NORMAL", "FULL", "EXTRA"})

_SCHEMA = """
CREATE TABLE IF NOT EXISTS schema_version (version INTEGER NOT NULL);
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
# Schema version 4: what each machine's tracker needs to resume after a restart (its
# ``Checkpoint``: state, open window, pending candidate, staleness clock), one row per machine,
# upserted in the commit that changed it: one row per machine touched, not one per sample.
_RESUME_SCHEMA = (
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
# Schema version 5: the notification outbox, one row per (alert transition, channel), inserted
# in the commit that staged the transition and deleted once the channel accepted it
# (``NotificationSender``, notify.py); ``next_ms`` is when to try again after a failure.
_NOTIFY_SCHEMA = (
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
# Schema version 7: the outbox as batches of lines (see the module doc) and the resume log.
# Version 1's ``outbox`` table (one row per line) is moved into batches by ``_migrate``.
_OUTBOX_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS outbox_batch (
        id INTEGER PRIMARY KEY,
        priority INTEGER NOT NULL,
        enqueued_ms INTEGER NOT NULL,
        lines TEXT NOT NULL,
        count INTEGER NOT NULL,
        skip INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_batch_priority ON outbox_batch (priority, id)",
    """CREATE TABLE IF NOT EXISTS resume_log (
        id INTEGER PRIMARY KEY,
        data TEXT NOT NULL
    )""",
)
_OUTBOX_VIEW = """
CREATE VIEW IF NOT EXISTS outbox (id, priority, enqueued_ms, line) AS
SELECT b.id * 65536 + j.key, b.priority, b.enqueued_ms, j.value
FROM outbox_batch b, json_each(b.lines) j WHERE j.key >= b.skip
"""
LINES_PER_BATCH = 65_536
"""Most lines in one outbox batch; a line's id is ``batch id * LINES_PER_BATCH + index``."""
RESUME_COMPACT_ROWS = 1_000
"""``resume_log`` rows (commits) after which the log is folded into ``resume``."""
_INSERT_BATCH = "INSERT INTO outbox_batch (priority, enqueued_ms, lines, count) VALUES (?, ?, ?, ?)"
_UPSERT_RESUME = """
INSERT OR REPLACE INTO resume (machine, state, since_ms, window_start_ms, window_offered,
    last_seen_ms, last_idle_ms, last_ts_ms, raw, pending, pending_since_ms)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
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


_STATE_VALUE: dict[State | None, str | None] = {None: None, **{s: s.value for s in State}}
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


def _batches(lines: Sequence[tuple[int, str]], now_ms: int) -> Iterator[tuple[int, int, str, int]]:
    """``outbox_batch`` rows of ``lines``: one per run of the same priority, in order."""
    start = 0
    end = len(lines)
    while start < end:
        priority = lines[start][0]
        stop = start + 1
        limit = min(end, start + LINES_PER_BATCH)
        while stop < limit and lines[stop][0] == priority:
            stop += 1
        texts = [text for _, text in lines[start:stop]]
        yield priority, now_ms, orjson.dumps(texts).decode(), len(texts)
        start = stop


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


class StoreError(RuntimeError):
    """The store file cannot be used (made by a newer pilotline, or not a pilotline store)."""

    def __init__(self, path: Path, problem: str) -> None:
        super().__init__(f"{path}: {problem}")
        self.path = path
        self.problem = problem


@dataclass(frozen=True, slots=True)
class OutboxDrop:
    """One enforcement of the outbox limit: rows dropped, by priority."""

    at_ms: int
    dropped: dict[int, int]
    depth: int
    """Outbox depth after the drop (at most the limit)."""


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
        outbox_max_points: int | None = None,
    ) -> None:
        synchronous = synchronous.upper()
        if synchronous not in _SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(_SYNCHRONOUS)}")
        if quarantine_limit < 1 or dead_letter_limit < 1:
            raise ValueError("quarantine_limit and dead_letter_limit must be positive")
        if outbox_max_points is not None and outbox_max_points < 1:
            raise ValueError("outbox_max_points must be positive")
        self.outbox_max_points = outbox_max_points
        self.outbox_dropped: dict[int, int] = {}
        """Rows dropped by the outbox limit since this store was opened, by priority."""
        self.last_drop: OutboxDrop | None = None
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
            self._by_priority: dict[int, int] = {
                int(row[0]): int(row[1])
                for row in self._db.execute(
                    "SELECT priority, SUM(count - skip) FROM outbox_batch GROUP BY priority"
                )
            }
            self._depth: int = sum(self._by_priority.values())
            self._resume_log_rows = 0
            self._resume_latest: dict[str, tuple[Any, ...]] = {}  # since the last compaction
            self._compact_resume()
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
            for statement in (
                *_SCHEMA.split(";"),
                TOKENS_SCHEMA,
                *_HISTORY_SCHEMA,
                *_RESUME_SCHEMA,
                *_NOTIFY_SCHEMA,
                *ALERT_STATE_SCHEMA,
                *_OUTBOX_SCHEMA,
            ):
                if statement.strip():
                    db.execute(statement)
            self._migrate_outbox_rows()
            db.execute(_OUTBOX_VIEW)
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

    def _migrate_outbox_rows(self) -> None:
        """Schema version 7: move the rows of version 1's ``outbox`` table (one per line)
        into batches, in order, and drop it (its name becomes the view)."""
        db = self._db
        kind = db.execute("SELECT type FROM sqlite_master WHERE name = 'outbox'").fetchone()
        if kind is None or kind[0] != "table":
            return
        run: list[str] = []
        run_key: tuple[int, int] | None = None
        for _id, priority, enqueued_ms, line in db.execute(
            "SELECT id, priority, enqueued_ms, line FROM outbox ORDER BY id"
        ):
            if run_key != (priority, enqueued_ms) or len(run) >= 5_000:
                if run_key is not None:
                    db.execute(_INSERT_BATCH, (*run_key, orjson.dumps(run).decode(), len(run)))
                run, run_key = [], (priority, enqueued_ms)
            run.append(line)
        if run_key is not None:
            db.execute(_INSERT_BATCH, (*run_key, orjson.dumps(run).decode(), len(run)))
        db.execute("DROP TABLE outbox")  # and its index

    # -- writes ------------------------------------------------------------------------

    def commit(
        self,
        *,
        now_ms: int,
        lines: Sequence[tuple[int, str]] = (),
        events: Sequence[Event] = (),
        quarantined: Sequence[QuarantineRow] = (),
        outbox: bool = True,
        resume: Sequence[Checkpoint] = (),
        notifications: Sequence[tuple[str, str]] = (),
        alert_state: Sequence[tuple[str, str]] = (),
    ) -> None:
        """Append ``(priority, line)`` rows to the outbox (when ``outbox``: an InfluxDB sink
        exists), apply ``events`` to the embedded tables, insert ``quarantined`` rows,
        keep the ``resume`` checkpoints, queue ``(channel, payload JSON)``
        ``notifications`` and keep the alert cores' ``(core, checkpoint JSON)``, in one
        transaction: a notification is queued exactly when the dispatcher's record that it
        was sent is kept. ``now_ms`` (wall clock) stamps the outbox and notification rows."""
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
        dropped: dict[int, int] = {}
        if not (
            append
            or machines
            or opened
            or closed
            or capacity
            or zones
            or quarantined
            or resume
            or notifications
            or alert_state
        ):
            return
        db = self._db
        compact = False
        db.execute("BEGIN IMMEDIATE")
        try:
            if append:
                db.executemany(_INSERT_BATCH, _batches(lines, now_ms))
                dropped = self._enforce_limit(lines)
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
            if resume:
                rows = [_resume_row(cp) for cp in resume]
                data = orjson.dumps(rows).decode()
                db.execute("INSERT INTO resume_log (data) VALUES (?)", (data,))
                compact = self._resume_log_rows + 1 >= RESUME_COMPACT_ROWS
                if compact:
                    latest = {**self._resume_latest, **{row[0]: row for row in rows}}
                    self._fold_resume(latest)
            if notifications:
                db.executemany(
                    "INSERT INTO notifications (channel, payload, created_ms, attempts, next_ms)"
                    " VALUES (?, ?, ?, 0, ?)",
                    [(channel, payload, now_ms, now_ms) for channel, payload in notifications],
                )
            if alert_state:
                db.executemany(
                    "INSERT OR REPLACE INTO alert_state (core, data, saved_ms) VALUES (?, ?, ?)",
                    [(core, data, now_ms) for core, data in alert_state],
                )
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
            self._appended(lines, dropped, now_ms)
        if compact:
            self._resume_latest.clear()
            self._resume_log_rows = 0
        elif resume:
            self._resume_log_rows += 1
            for row in rows:
                self._resume_latest[row[0]] = row

    def _fold_resume(self, latest: dict[str, tuple[Any, ...]]) -> None:
        """Inside a transaction: the latest checkpoints into ``resume``, the log emptied."""
        self._db.executemany(_UPSERT_RESUME, list(latest.values()))
        self._db.execute("DELETE FROM resume_log")

    def _compact_resume(self) -> None:
        """Fold what an earlier run left in ``resume_log`` into ``resume`` (at open)."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            latest: dict[str, tuple[Any, ...]] = {}
            for (data,) in db.execute("SELECT data FROM resume_log ORDER BY id").fetchall():
                for row in orjson.loads(data):
                    latest[row[0]] = tuple(row)
            if latest:
                self._fold_resume(latest)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise

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

    def alert_state(self) -> AlertStateStore:
        """Alert checkpoints, silences and acknowledgements kept in this file."""
        return AlertStateStore(self._db)

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

    def resume_points(self) -> list[Checkpoint]:
        """Every machine's last checkpoint (``commit(resume=...)``), for a restarted gateway.

        A machine with a row in ``machines`` but none here (a store written before schema
        version 4) resumes from that row and its open window, with its last sample taken to
        be its last state change: it then goes ``offline`` as soon as that is older than
        ``stale_after``, which also closes a window a killed older gateway left open."""
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
            for row in self._rows("SELECT * FROM resume ORDER BY machine")
        }
        for (data,) in self._db.execute("SELECT data FROM resume_log ORDER BY id").fetchall():
            for row in orjson.loads(data):
                points[row[0]] = _checkpoint(row)
        for row in self._rows(
            "SELECT m.machine, m.state, m.since_ms, MAX(w.start_ms) AS window_start_ms"
            " FROM machines m LEFT JOIN idle_windows w"
            " ON w.machine = m.machine AND w.end_ms IS NULL GROUP BY m.machine"
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
        dropped: dict[int, int] = {}
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            if append:
                db.executemany(_INSERT_BATCH, _batches(lines, now_ms))
                dropped = self._enforce_limit(lines)
            db.execute(
                "INSERT OR REPLACE INTO reports (kind, period_ms, written_ms) VALUES (?, ?, ?)",
                (kind, period_ms, now_ms),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        if append:
            self._appended(lines, dropped, now_ms)

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

    def _enforce_limit(self, lines: Sequence[tuple[int, str]]) -> dict[int, int]:
        """Inside the appending transaction: drop what exceeds ``outbox_max_points``, the
        highest priority number (least important) first, oldest first: whole batches, and
        the oldest lines of the last one (``skip``). Returns the lines dropped by priority;
        the in-memory counters are updated after COMMIT."""
        limit = self.outbox_max_points
        if limit is None:
            return {}
        excess = self._depth + len(lines) - limit
        if excess <= 0:
            return {}
        counts = dict(self._by_priority)
        for priority, _ in lines:
            counts[priority] = counts.get(priority, 0) + 1
        dropped: dict[int, int] = {}
        db = self._db
        for priority in sorted(counts, reverse=True):
            want = min(excess, counts[priority])
            if want <= 0:
                continue
            gone = 0
            whole: list[tuple[int]] = []
            for batch_id, count, skip in db.execute(
                "SELECT id, count, skip FROM outbox_batch WHERE priority = ? ORDER BY id",
                (priority,),
            ):
                left = count - skip
                if gone + left <= want:
                    whole.append((batch_id,))
                    gone += left
                    if gone == want:
                        break
                else:
                    db.execute(
                        "UPDATE outbox_batch SET skip = ? WHERE id = ?",
                        (skip + want - gone, batch_id),
                    )
                    gone = want
                    break
            db.executemany("DELETE FROM outbox_batch WHERE id = ?", whole)
            dropped[priority] = gone
            excess -= gone
            if excess <= 0:
                break
        return dropped

    def _appended(
        self, lines: Sequence[tuple[int, str]], dropped: dict[int, int], now_ms: int
    ) -> None:
        by_priority = self._by_priority
        for priority, _ in lines:
            by_priority[priority] = by_priority.get(priority, 0) + 1
        self._depth += len(lines)
        if dropped:
            for priority, n in dropped.items():
                by_priority[priority] -= n
                self.outbox_dropped[priority] = self.outbox_dropped.get(priority, 0) + n
            self._depth -= sum(dropped.values())
            self.last_drop = OutboxDrop(now_ms, dropped, self._depth)

    def _delete_upto(self, upto_id: int) -> dict[int, int]:
        """Inside a transaction: forget lines ``id <= upto_id``; returns how many of each
        priority went (the caller takes them off the counters with ``_removed`` once
        committed)."""
        batch_id, index = divmod(upto_id, LINES_PER_BATCH)
        removed: dict[int, int] = {}
        db = self._db
        for priority, left in db.execute(
            "DELETE FROM outbox_batch WHERE id < ? RETURNING priority, count - skip", (batch_id,)
        ).fetchall():
            removed[priority] = removed.get(priority, 0) + left
        row = db.execute(
            "SELECT priority, count, skip FROM outbox_batch WHERE id = ?", (batch_id,)
        ).fetchone()
        if row is not None and index >= row[2]:
            priority, count, skip = row
            if index + 1 >= count:
                db.execute("DELETE FROM outbox_batch WHERE id = ?", (batch_id,))
            else:
                db.execute("UPDATE outbox_batch SET skip = ? WHERE id = ?", (index + 1, batch_id))
            removed[priority] = removed.get(priority, 0) + min(count, index + 1) - skip
        return removed

    def _removed(self, removed: dict[int, int]) -> int:
        for priority, n in removed.items():
            self._by_priority[priority] -= n
        count = sum(removed.values())
        self._depth -= count
        return count

    def outbox_depth_by_priority(self) -> dict[int, int]:
        """Lines waiting in the outbox, by priority (kept in memory)."""
        return {p: n for p, n in self._by_priority.items() if n}

    def outbox_lines(self, limit: int) -> tuple[int, list[str]]:
        """Up to ``limit`` lines, oldest first, and the id of the last one (0: none)."""
        lines: list[str] = []
        last_id = 0
        for batch_id, data, skip in self._db.execute(
            "SELECT id, lines, skip FROM outbox_batch ORDER BY id LIMIT ?", (limit,)
        ):
            batch = orjson.loads(data)
            take = min(len(batch), skip + limit - len(lines))
            lines.extend(batch[skip:take] if skip or take < len(batch) else batch)
            last_id = batch_id * LINES_PER_BATCH + take - 1
            if len(lines) >= limit:
                break
        return last_id, lines

    def outbox_peek(self, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` ``(id, line)`` rows, oldest first."""
        rows: list[tuple[int, str]] = []
        for batch_id, data, skip in self._db.execute(
            "SELECT id, lines, skip FROM outbox_batch ORDER BY id LIMIT ?", (limit,)
        ):
            base = batch_id * LINES_PER_BATCH
            batch = orjson.loads(data)
            for index in range(skip, min(len(batch), skip + limit - len(rows))):
                rows.append((base + index, batch[index]))
            if len(rows) >= limit:
                break
        return rows

    def outbox_delete(self, upto_id: int) -> None:
        """Forget lines with ``id <= upto_id``: call only once the store acknowledged them."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            removed = self._delete_upto(upto_id)
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        self._removed(removed)

    def outbox_dead_letter(
        self, upto_id: int, *, now_ms: int, status: int | None, error: str
    ) -> int:
        """Move lines with ``id <= upto_id`` to ``dead_letter``; returns how many moved."""
        db = self._db
        db.execute("BEGIN IMMEDIATE")
        try:
            db.execute(
                "INSERT INTO dead_letter"
                " (outbox_id, priority, enqueued_ms, dead_ms, status, error, line)"
                " SELECT b.id * ? + j.key, b.priority, b.enqueued_ms, ?, ?, ?, j.value"
                " FROM outbox_batch b, json_each(b.lines) j"
                " WHERE b.id <= ? AND j.key >= b.skip AND b.id * ? + j.key <= ?"
                " ORDER BY b.id, j.key",
                (
                    LINES_PER_BATCH,
                    now_ms,
                    status,
                    error,
                    upto_id // LINES_PER_BATCH,
                    LINES_PER_BATCH,
                    upto_id,
                ),
            )
            removed = self._delete_upto(upto_id)
            db.execute(
                "DELETE FROM dead_letter WHERE id <= (SELECT MAX(id) FROM dead_letter) - ?",
                (self.dead_letter_limit,),
            )
            db.execute("COMMIT")
        except BaseException:
            db.execute("ROLLBACK")
            raise
        return self._removed(removed)

    def outbox_depth(self) -> int:
        return self._depth

    # -- notifications -------------------------------------------------------------------

    def notification_next(self, channel: str) -> tuple[int, str, int, int] | None:
        """The channel's oldest waiting notification ``(id, payload, attempts, next_ms)``."""
        row = self._db.execute(
            "SELECT id, payload, attempts, next_ms FROM notifications WHERE channel = ?"
            " ORDER BY id LIMIT 1",
            (channel,),
        ).fetchone()
        return None if row is None else (int(row[0]), str(row[1]), int(row[2]), int(row[3]))

    def notification_delete(self, notification_id: int) -> None:
        self._db.execute("DELETE FROM notifications WHERE id = ?", (notification_id,))

    def notification_retry(self, notification_id: int, *, next_ms: int) -> None:
        self._db.execute(
            "UPDATE notifications SET attempts = attempts + 1, next_ms = ? WHERE id = ?",
            (next_ms, notification_id),
        )

    def notifications_waiting(self, channel: str | None = None) -> int:
        if channel is None:
            row = self._db.execute("SELECT COUNT(*) FROM notifications").fetchone()
        else:
            row = self._db.execute(
                "SELECT COUNT(*) FROM notifications WHERE channel = ?", (channel,)
            ).fetchone()
        return int(row[0])

    def outbox_oldest_ms(self) -> int | None:
        """Wall time the oldest waiting line was enqueued, or None if the outbox is empty."""
        row = self._db.execute(
            "SELECT enqueued_ms FROM outbox_batch ORDER BY id LIMIT 1"
        ).fetchone()
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
