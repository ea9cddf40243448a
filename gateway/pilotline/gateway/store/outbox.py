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

**Limits** (``max_points`` lines, ``max_bytes`` bytes): when an append would take the
outbox above either, the oldest rows of the least important priority go first, in the same
transaction, until it is within both: raw telemetry (priority 1) oldest first, and only when
no telemetry is left the oldest events (priority 0: states, windows, capacity, alerts).
Each drop is counted by priority (``dropped``, in lines) and remembered (``last_drop``) for
the gateway to log, export and report in /health. Per-priority depths (lines and bytes) are
kept in memory (like the total depth) so enforcing the limits costs no COUNT; it deletes
whole batches found on the ``(priority, id)`` index and trims the oldest lines of the last
one (``skip``).

**Bytes** are those of the stored line text: a batch's JSON array (``lines``, UTF-8), what
the file holds. A batch partly sent or trimmed counts pro rata of its lines left
(``_left_bytes``), so the figure needs no per-line sizes and never drifts: it is the same
function of ``(size, count, skip)`` on every path.
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


def _left_bytes(size: int, count: int, skip: int) -> int:
    """Bytes a batch of ``size`` bytes and ``count`` lines counts for with ``skip`` gone."""
    return size * (count - skip) // count if count else 0


@dataclass(frozen=True, slots=True)
class OutboxDrop:
    """One enforcement of the outbox limits: lines dropped, by priority."""

    at_ms: int
    dropped: dict[int, int]
    depth: int
    """Outbox depth (lines) after the drop (at most ``max_points``)."""
    bytes: int = 0
    """Outbox bytes after the drop (at most ``max_bytes``)."""


def _batches(lines: Sequence[tuple[int, str]], now_ms: int) -> Iterator[tuple[int, int, str, int]]:
    """``outbox_batch`` rows of ``lines``: one per run of the same priority, in order (the
    bytes of each are ``len(row[2].encode())``, as SQLite's ``length(CAST(lines AS BLOB))``
    counts them)."""
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


def _lines_for_bytes(size: int, count: int, skip: int, need: int) -> int:
    """The fewest oldest lines of a batch (``size`` bytes, ``count`` lines, ``skip`` gone)
    whose going frees at least ``need`` bytes (``need`` below what is left of it)."""
    if need <= 0:
        return 0
    left = _left_bytes(size, count, skip)
    k = max(1, need * count // size) if size else 1
    while k > 1 and left - _left_bytes(size, count, skip + k - 1) >= need:
        k -= 1
    while left - _left_bytes(size, count, skip + k) < need:
        k += 1
    return k


class Outbox:
    """``outbox_batch`` and ``dead_letter`` on the store's connection, with the depths."""

    def __init__(
        self,
        db: sqlite3.Connection,
        *,
        max_points: int | None,
        dead_letter_limit: int,
        max_bytes: int | None = None,
    ) -> None:
        self._db = db
        self.max_points = max_points
        self.max_bytes = max_bytes
        self.dead_letter_limit = dead_letter_limit
        self.dropped: dict[int, int] = {}
        """Lines dropped by the limits since the store was opened, by priority."""
        self.last_drop: OutboxDrop | None = None
        self._by_priority: dict[int, int] = {}
        self._bytes_by_priority: dict[int, int] = {}
        for priority, left, size in db.execute(
            "SELECT priority, SUM(count - skip),"
            " SUM(length(CAST(lines AS BLOB)) * (count - skip) / count)"
            " FROM outbox_batch GROUP BY priority"
        ):
            self._by_priority[int(priority)] = int(left)
            self._bytes_by_priority[int(priority)] = int(size)
        self._depth: int = sum(self._by_priority.values())
        self._bytes: int = sum(self._bytes_by_priority.values())

    # -- writes ------------------------------------------------------------------------------

    def append(self, tx: Transaction, lines: Sequence[tuple[int, str]], now_ms: int) -> None:
        """Inside ``tx``: append ``(priority, line)`` rows stamped ``now_ms`` and enforce the
        limits; the depths follow once ``tx`` is committed."""
        rows = list(_batches(lines, now_ms))
        self._db.executemany(_INSERT_BATCH, rows)
        added: dict[int, tuple[int, int]] = {}  # priority -> (lines, bytes) appended
        for priority, _, text, count in rows:
            n, size = added.get(priority, (0, 0))
            added[priority] = (n + count, size + len(text.encode()))
        dropped = self._enforce_limits(added)
        tx.after_commit(lambda: self._appended(added, dropped, now_ms))

    def _enforce_limits(self, added: dict[int, tuple[int, int]]) -> dict[int, tuple[int, int]]:
        """Inside the appending transaction: drop what exceeds ``max_points`` or
        ``max_bytes``, the highest priority number (least important) first, oldest first:
        whole batches, and the oldest lines of the last one (``skip``). Returns the
        ``(lines, bytes)`` dropped by priority."""
        excess_lines = excess_bytes = 0
        if self.max_points is not None:
            excess_lines = self._depth + sum(n for n, _ in added.values()) - self.max_points
        if self.max_bytes is not None:
            excess_bytes = self._bytes + sum(b for _, b in added.values()) - self.max_bytes
        if excess_lines <= 0 and excess_bytes <= 0:
            return {}
        priorities = set(self._by_priority) | set(added)
        dropped: dict[int, tuple[int, int]] = {}
        db = self._db
        for priority in sorted(priorities, reverse=True):
            gone_lines = gone_bytes = 0
            whole: list[tuple[int]] = []
            for batch_id, count, skip, size in db.execute(
                "SELECT id, count, skip, length(CAST(lines AS BLOB)) FROM outbox_batch"
                " WHERE priority = ? ORDER BY id",
                (priority,),
            ):
                need_lines, need_bytes = excess_lines - gone_lines, excess_bytes - gone_bytes
                left_lines, left_bytes = count - skip, _left_bytes(size, count, skip)
                if need_lines >= left_lines or need_bytes >= left_bytes:
                    k = left_lines
                else:  # the oldest lines of this one may be enough for both limits
                    k = max(need_lines, _lines_for_bytes(size, count, skip, need_bytes))
                if k >= left_lines:
                    whole.append((batch_id,))  # all of it, and maybe more to go
                else:
                    db.execute(
                        "UPDATE outbox_batch SET skip = ? WHERE id = ?", (skip + k, batch_id)
                    )
                gone_lines += min(k, left_lines)
                gone_bytes += left_bytes - _left_bytes(size, count, min(count, skip + k))
                if gone_lines >= excess_lines and gone_bytes >= excess_bytes:
                    break
            db.executemany("DELETE FROM outbox_batch WHERE id = ?", whole)
            if gone_lines:
                dropped[priority] = (gone_lines, gone_bytes)
            excess_lines -= gone_lines
            excess_bytes -= gone_bytes
            if excess_lines <= 0 and excess_bytes <= 0:
                break
        return dropped

    def _appended(
        self,
        added: dict[int, tuple[int, int]],
        dropped: dict[int, tuple[int, int]],
        now_ms: int,
    ) -> None:
        by_priority, bytes_by_priority = self._by_priority, self._bytes_by_priority
        for priority, (n, size) in added.items():
            by_priority[priority] = by_priority.get(priority, 0) + n
            bytes_by_priority[priority] = bytes_by_priority.get(priority, 0) + size
            self._depth += n
            self._bytes += size
        if dropped:
            for priority, (n, size) in dropped.items():
                by_priority[priority] -= n
                bytes_by_priority[priority] -= size
                self.dropped[priority] = self.dropped.get(priority, 0) + n
                self._depth -= n
                self._bytes -= size
            self.last_drop = OutboxDrop(
                now_ms, {p: n for p, (n, _) in dropped.items()}, self._depth, self._bytes
            )

    def _delete_upto(self, upto_id: int) -> dict[int, tuple[int, int]]:
        """Inside a transaction: forget lines ``id <= upto_id``; returns the ``(lines,
        bytes)`` of each priority that went (taken off the depths with ``_removed`` once
        committed)."""
        batch_id, index = divmod(upto_id, LINES_PER_BATCH)
        removed: dict[int, tuple[int, int]] = {}

        def remove(priority: int, n: int, size: int) -> None:
            had_n, had_size = removed.get(priority, (0, 0))
            removed[priority] = (had_n + n, had_size + size)

        db = self._db
        for priority, left, size in db.execute(
            "DELETE FROM outbox_batch WHERE id < ?"
            " RETURNING priority, count - skip,"
            " length(CAST(lines AS BLOB)) * (count - skip) / count",
            (batch_id,),
        ).fetchall():
            remove(priority, left, size)
        row = db.execute(
            "SELECT priority, count, skip, length(CAST(lines AS BLOB)) FROM outbox_batch"
            " WHERE id = ?",
            (batch_id,),
        ).fetchone()
        if row is not None and index >= row[2]:
            priority, count, skip, size = row
            if index + 1 >= count:
                db.execute("DELETE FROM outbox_batch WHERE id = ?", (batch_id,))
            else:
                db.execute("UPDATE outbox_batch SET skip = ? WHERE id = ?", (index + 1, batch_id))
            new_skip = min(count, index + 1)
            remove(
                priority,
                new_skip - skip,
                _left_bytes(size, count, skip) - _left_bytes(size, count, new_skip),
            )
        return removed

    def _removed(self, removed: dict[int, tuple[int, int]]) -> int:
        count = 0
        for priority, (n, size) in removed.items():
            self._by_priority[priority] -= n
            self._bytes_by_priority[priority] -= size
            self._bytes -= size
            count += n
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

    def bytes(self) -> int:
        """Bytes of the lines waiting (see the module doc: kept in memory)."""
        return self._bytes

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
