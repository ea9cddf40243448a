"""The plant as the events describe it: each machine's current state, its idle windows,
machine and zone capacity, and every confirmed state change (``state_history``).

The tables are brought up to date from the rules' events (``changes`` then ``apply``) in the
store's commit. Upserts keep the latest by event time, so a replayed or late event never
rolls a row back; a replayed state change overwrites its own ``state_history`` row (keyed
by machine and time), so utilization computed from it neither skips nor repeats.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Any, Final

from pilotline.gateway.store.db import Transaction, rows
from pilotline.rules.events import (
    Capacity,
    Event,
    IdleWindowClosed,
    IdleWindowOpened,
    StateChanged,
    ZoneCapacity,
)

PLANT_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS machines (
    machine TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    state_code INTEGER NOT NULL,
    since_ms INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS idle_windows (
    machine TEXT NOT NULL,
    zone TEXT NOT NULL,
    start_ms INTEGER NOT NULL,
    end_ms INTEGER,
    duration_s REAL,
    offered INTEGER NOT NULL DEFAULT 0,
    PRIMARY KEY (machine, start_ms)
)""",
    "CREATE INDEX IF NOT EXISTS idle_windows_start ON idle_windows (start_ms)",
    "CREATE INDEX IF NOT EXISTS idle_windows_open ON idle_windows (start_ms)"
    " WHERE end_ms IS NULL",
    """CREATE TABLE IF NOT EXISTS capacity (
    machine TEXT PRIMARY KEY,
    zone TEXT NOT NULL,
    owner TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    available INTEGER NOT NULL,
    idle_for_s REAL NOT NULL,
    offered INTEGER NOT NULL
)""",
    """CREATE TABLE IF NOT EXISTS zone_capacity (
    zone TEXT NOT NULL,
    capability TEXT NOT NULL,
    ts_ms INTEGER NOT NULL,
    machines INTEGER NOT NULL,
    available INTEGER NOT NULL,
    running INTEGER NOT NULL,
    down INTEGER NOT NULL,
    offline INTEGER NOT NULL,
    PRIMARY KEY (zone, capability)
)""",
)
"""Schema version 1."""
HISTORY_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS state_history (
        machine TEXT NOT NULL,
        zone TEXT NOT NULL,
        ts_ms INTEGER NOT NULL,
        state TEXT NOT NULL,
        PRIMARY KEY (machine, ts_ms)
    )""",
    "CREATE INDEX IF NOT EXISTS state_history_ts ON state_history (ts_ms)",
)
"""Schema version 3: every confirmed state change (utilization is computed from it)."""

_UPSERT_MACHINE: Final = """
INSERT INTO machines (machine, zone, owner, state, state_code, since_ms)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (machine) DO UPDATE SET
    zone = excluded.zone, owner = excluded.owner, state = excluded.state,
    state_code = excluded.state_code, since_ms = excluded.since_ms
WHERE excluded.since_ms >= machines.since_ms
"""
_UPSERT_HISTORY: Final = """
INSERT INTO state_history (machine, zone, ts_ms, state) VALUES (?, ?, ?, ?)
ON CONFLICT (machine, ts_ms) DO UPDATE SET zone = excluded.zone, state = excluded.state
"""
_OPEN_WINDOW: Final = """
INSERT OR IGNORE INTO idle_windows (machine, zone, start_ms, end_ms, duration_s, offered)
VALUES (?, ?, ?, NULL, NULL, 0)
"""
_CLOSE_WINDOW: Final = """
INSERT INTO idle_windows (machine, zone, start_ms, end_ms, duration_s, offered)
VALUES (?, ?, ?, ?, ?, ?)
ON CONFLICT (machine, start_ms) DO UPDATE SET
    zone = excluded.zone, end_ms = excluded.end_ms, duration_s = excluded.duration_s,
    offered = excluded.offered
"""
_UPSERT_CAPACITY: Final = """
INSERT INTO capacity (machine, zone, owner, ts_ms, available, idle_for_s, offered)
VALUES (?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (machine) DO UPDATE SET
    zone = excluded.zone, owner = excluded.owner, ts_ms = excluded.ts_ms,
    available = excluded.available, idle_for_s = excluded.idle_for_s,
    offered = excluded.offered
WHERE excluded.ts_ms >= capacity.ts_ms
"""
_UPSERT_ZONE: Final = """
INSERT INTO zone_capacity (zone, capability, ts_ms, machines, available, running, down, offline)
VALUES (?, ?, ?, ?, ?, ?, ?, ?)
ON CONFLICT (zone, capability) DO UPDATE SET
    ts_ms = excluded.ts_ms, machines = excluded.machines, available = excluded.available,
    running = excluded.running, down = excluded.down, offline = excluded.offline
WHERE excluded.ts_ms >= zone_capacity.ts_ms
"""


@dataclass(frozen=True, slots=True)
class PlantChanges:
    """The rows a batch of events writes, by statement (built before the transaction, so a
    commit with nothing to write opens none)."""

    machines: list[tuple[Any, ...]]
    opened: list[tuple[Any, ...]]
    closed: list[tuple[Any, ...]]
    capacity: list[tuple[Any, ...]]
    zones: list[tuple[Any, ...]]


def changes(events: Sequence[Event]) -> PlantChanges | None:
    """The rows ``events`` write, or None if they write none (other kinds are ignored)."""
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
    if not (machines or opened or closed or capacity or zones):
        return None
    return PlantChanges(machines, opened, closed, capacity, zones)


class Plant:
    """``machines``, ``idle_windows``, ``capacity``, ``zone_capacity`` and ``state_history``
    on the store's connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    def apply(self, tx: Transaction, changes: PlantChanges) -> None:
        """Inside ``tx``: write ``changes`` (a state change also goes to ``state_history``)."""
        db = self._db
        if changes.machines:
            db.executemany(_UPSERT_MACHINE, changes.machines)
            db.executemany(_UPSERT_HISTORY, [(m[0], m[1], m[5], m[3]) for m in changes.machines])
        if changes.opened:
            db.executemany(_OPEN_WINDOW, changes.opened)
        if changes.closed:
            db.executemany(_CLOSE_WINDOW, changes.closed)
        if changes.capacity:
            db.executemany(_UPSERT_CAPACITY, changes.capacity)
        if changes.zones:
            db.executemany(_UPSERT_ZONE, changes.zones)

    def machines(self) -> list[dict[str, Any]]:
        return rows(self._db, "SELECT * FROM machines ORDER BY zone, machine")

    def capacity(self) -> list[dict[str, Any]]:
        return rows(
            self._db,
            "SELECT * FROM capacity ORDER BY zone, machine",
            bools=("available", "offered"),
        )

    def zone_capacity(self) -> list[dict[str, Any]]:
        return rows(self._db, "SELECT * FROM zone_capacity ORDER BY zone, capability")

    def windows(
        self,
        since_ms: int,
        machine: str | None = None,
        limit: int = 1000,
        *,
        among: Collection[str] | None = None,
        after: tuple[int, str] | None = None,
    ) -> list[dict[str, Any]]:
        """Windows that started at or after ``since_ms``, or are still open; newest first
        (by start, then machine: a window's key).

        ``among`` keeps only these machines (an owner's, for the API); ``after`` starts
        after the window with that key (``(start_ms, machine)``: the API's cursor)."""
        where = "(start_ms >= ? OR end_ms IS NULL)"
        params: list[Any] = [since_ms]
        if after is not None:
            where += " AND (start_ms < ? OR (start_ms = ? AND machine > ?))"
            params.extend((after[0], after[0], after[1]))
        if machine is not None:
            where += " AND machine = ?"
            params.append(machine)
        if among is not None:
            where += f" AND machine IN ({', '.join('?' * len(among))})"
            params.extend(among)
        params.append(limit)
        return rows(
            self._db,
            f"SELECT * FROM idle_windows WHERE {where} ORDER BY start_ms DESC, machine LIMIT ?",  # noqa: S608 (fixed clauses, values bound) # nosec B608
            params,
            bools=("offered",),
        )

    def state_history(self, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        """State changes in ``[from_ms, to_ms)`` plus, per machine, the last one at or before
        ``from_ms`` (the state the period starts in); ordered by time, then machine."""
        return rows(
            self._db,
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
