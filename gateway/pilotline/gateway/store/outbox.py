"""The durable outbox of InfluxDB lines, and the dead letters it could not deliver.

The outbox is drained by ``OutboxDrainer`` (sinks/influx/drain.py) oldest first:
``lines``, write, and ``delete`` only after the store acknowledged. Lines InfluxDB refuses
for good (a 400 on a line) move to ``dead_letter`` so they are kept, counted and
inspectable, never silently dropped.

**Batches** (schema version 7): a commit appends its lines as one row per run of lines of
the same priority (``outbox_batch``: a JSON array of lines, ``count`` and ``skip``, the
number of leading lines already gone), not one row per line: cheaper to commit and to drain
(measured: benchmarks/README.md, ``benchmarks/micro_hotpath.py store``). A line's id is
``batch id * LINES_PER_BATCH + index``, so ids still grow in commit order and the drainer
can stop, delete or dead-letter in the middle of a batch (``skip``). The view ``outbox``
shows one row per line (``id, priority, enqueued_ms, line``) for people and tests.

**Limit** (``max_points``): when an append would take the outbox above the limit, the
oldest rows of the least important priority go first, in the same transaction: raw
telemetry (priority 1) oldest first, and only when no telemetry is left the oldest events
(priority 0: states, windows, capacity, alerts). Each drop is counted by priority
(``dropped``) and remembered (``last_drop``) for the gateway to log, export and report in
/health. Per-priority depths are kept in memory (like the total depth) so enforcing the
limit costs no COUNT; it deletes whole batches found on the ``(priority, id)`` index and
trims the oldest lines of the last one (``skip``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from typing import Any, Final

import orjson

from pilotline.gateway.store.db import Transaction, rows

DEAD_LETTER_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS dead_letter (
    id INTEGER PRIMARY KEY AUTOINCREMENT,
    outbox_id INTEGER NOT NULL,
    priority INTEGER NOT NULL,
    enqueued_ms INTEGER NOT NULL,
    dead_ms INTEGER NOT NULL,
    status INTEGER,
    error TEXT NOT NULL,
    line TEXT NOT NULL
)""",
)
"""Schema version 1."""
OUTBOX_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS outbox_batch (
        id INTEGER PRIMARY KEY,
        priority INTEGER NOT NULL,
        enqueued_ms INTEGER NOT NULL,
        lines TEXT NOT NULL,
        count INTEGER NOT NULL,
        skip INTEGER NOT NULL DEFAULT 0
    )""",
    "CREATE INDEX IF NOT EXISTS outbox_batch_priority ON outbox_batch (priority, id)",
)
"""Schema version 7: the outbox as batches of lines. Version 1's ``outbox`` table (one row
per line) is moved into batches by ``move_v1_rows``; its name becomes ``OUTBOX_VIEW``."""
OUTBOX_VIEW: Final = """
CREATE VIEW IF NOT EXISTS outbox (id, priority, enqueued_ms, line) AS
SELECT b.id * 65536 + j.key, b.priority, b.enqueued_ms, j.value
FROM outbox_batch b, json_each(b.lines) j WHERE j.key >= b.skip
"""
LINES_PER_BATCH: Final = 65_536
"""Most lines in one outbox batch; a line's id is ``batch id * LINES_PER_BATCH + index``."""
_INSERT_BATCH: Final = (
    "INSERT INTO outbox_batch (priority, enqueued_ms, lines, count) VALUES (?, ?, ?, ?)"
)


@dataclass(frozen=True, slots=True)
class OutboxDrop:
    """One enforcement of the outbox limit: rows dropped, by priority."""

    at_ms: int
    dropped: dict[int, int]
    depth: int
    """Outbox depth after the drop (at most the limit)."""


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


def move_v1_rows(db: sqlite3.Connection) -> None:
    """Schema version 7, inside the migration's transaction: move the rows of version 1's
    ``outbox`` table (one per line) into batches, in order, and drop it (and its index)."""
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
    db.execute("DROP TABLE outbox")


class Outbox:
    """``outbox_batch`` and ``dead_letter`` on the store's connection, with the depths."""

    def __init__(
        self, db: sqlite3.Connection, *, max_points: int | None, dead_letter_limit: int
    ) -> None:
        self._db = db
        self.max_points = max_points
        self.dead_letter_limit = dead_letter_limit
        self.dropped: dict[int, int] = {}
        """Lines dropped by the limit since the store was opened, by priority."""
        self.last_drop: OutboxDrop | None = None
        self._by_priority: dict[int, int] = {
            int(row[0]): int(row[1])
            for row in db.execute(
                "SELECT priority, SUM(count - skip) FROM outbox_batch GROUP BY priority"
            )
        }
        self._depth: int = sum(self._by_priority.values())

    # -- writes ------------------------------------------------------------------------------

    def append(self, tx: Transaction, lines: Sequence[tuple[int, str]], now_ms: int) -> None:
        """Inside ``tx``: append ``(priority, line)`` rows stamped ``now_ms`` and enforce the
        limit; the depths follow once ``tx`` is committed."""
        self._db.executemany(_INSERT_BATCH, _batches(lines, now_ms))
        dropped = self._enforce_limit(lines)
        tx.after_commit(lambda: self._appended(lines, dropped, now_ms))

    def _enforce_limit(self, lines: Sequence[tuple[int, str]]) -> dict[int, int]:
        """Inside the appending transaction: drop what exceeds ``max_points``, the highest
        priority number (least important) first, oldest first: whole batches, and the
        oldest lines of the last one (``skip``). Returns the lines dropped by priority."""
        limit = self.max_points
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
                self.dropped[priority] = self.dropped.get(priority, 0) + n
            self._depth -= sum(dropped.values())
            self.last_drop = OutboxDrop(now_ms, dropped, self._depth)

    def _delete_upto(self, upto_id: int) -> dict[int, int]:
        """Inside a transaction: forget lines ``id <= upto_id``; returns how many of each
        priority went (taken off the depths with ``_removed`` once committed)."""
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

    def delete(self, upto_id: int) -> None:
        """Forget lines with ``id <= upto_id``: call only once the store acknowledged them."""
        with Transaction(self._db):
            removed = self._delete_upto(upto_id)
        self._removed(removed)

    def dead_letter(self, upto_id: int, *, now_ms: int, status: int | None, error: str) -> int:
        """Move lines with ``id <= upto_id`` to ``dead_letter``; returns how many moved."""
        db = self._db
        with Transaction(db):
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
        return self._removed(removed)

    # -- reads -------------------------------------------------------------------------------

    def depth(self) -> int:
        return self._depth

    def depth_by_priority(self) -> dict[int, int]:
        """Lines waiting, by priority (kept in memory)."""
        return {p: n for p, n in self._by_priority.items() if n}

    def lines(self, limit: int) -> tuple[int, list[str]]:
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

    def peek(self, limit: int) -> list[tuple[int, str]]:
        """Up to ``limit`` ``(id, line)`` rows, oldest first."""
        result: list[tuple[int, str]] = []
        for batch_id, data, skip in self._db.execute(
            "SELECT id, lines, skip FROM outbox_batch ORDER BY id LIMIT ?", (limit,)
        ):
            base = batch_id * LINES_PER_BATCH
            batch = orjson.loads(data)
            for index in range(skip, min(len(batch), skip + limit - len(result))):
                result.append((base + index, batch[index]))
            if len(result) >= limit:
                break
        return result

    def oldest_ms(self) -> int | None:
        """Wall time the oldest waiting line was enqueued, or None if the outbox is empty."""
        row = self._db.execute(
            "SELECT enqueued_ms FROM outbox_batch ORDER BY id LIMIT 1"
        ).fetchone()
        return None if row is None else int(row[0])

    def dead_letters(self, limit: int = 100) -> list[dict[str, Any]]:
        """Newest first."""
        return rows(self._db, "SELECT * FROM dead_letter ORDER BY id DESC LIMIT ?", (limit,))

    def dead_letter_count(self) -> int:
        count: int = self._db.execute("SELECT COUNT(*) FROM dead_letter").fetchone()[0]
        return count
