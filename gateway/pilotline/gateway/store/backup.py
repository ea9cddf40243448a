"""``pilotline backup``: a consistent copy of the store while the gateway runs.

SQLite's online backup API (``Connection.backup``) copies the file page by page from one
read transaction: the copy is the store as it was at one commit, with no half-written batch,
whatever the gateway writes meanwhile. It is done in one step (``pages=-1``): a backup in
several steps starts over each time another process writes the source, and the gateway
writes many times a second. In WAL mode a reader does not block the writer, so the gateway
goes on committing (and acknowledging MQTT messages) during the copy; only its WAL is not
checkpointed past the copy's snapshot until the copy ends.

The source is opened read-only (``mode=ro``) and without the store's lock (lock.py): the
gateway holds that lock, and a backup must neither wait for it nor take the store from the
gateway. Nothing in the source is changed (no migration, no permission change).

The copy is written under a temporary name beside the target, checked (``PRAGMA
integrity_check``), made durable and renamed into place: a target path holds a whole, checked
copy or nothing. Like the store it holds token hashes and raw quarantined payloads, so it is
created readable by its owner only (0600).
"""

from __future__ import annotations

import contextlib
import os
import sqlite3
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Final

from pilotline.gateway.store.db import owner_only
from pilotline.gateway.store.errors import StoreError
from pilotline.gateway.timefmt import iso

__all__ = ["Backup", "backup", "default_name"]

COUNTED: Final = (
    ("machines", "SELECT COUNT(*) FROM machines"),
    ("state_history", "SELECT COUNT(*) FROM state_history"),
    ("idle_windows", "SELECT COUNT(*) FROM idle_windows"),
    ("idle_windows open", "SELECT COUNT(*) FROM idle_windows WHERE end_ms IS NULL"),
    ("outbox lines", "SELECT COALESCE(SUM(count - skip), 0) FROM outbox_batch"),
    ("dead_letter", "SELECT COUNT(*) FROM dead_letter"),
    ("quarantine", "SELECT COUNT(*) FROM quarantine"),
    ("notifications waiting", "SELECT COUNT(*) FROM notifications"),
    ("api_tokens", "SELECT COUNT(*) FROM api_tokens"),
)
"""What the report counts in the copy (tables of the current schema)."""


@dataclass(frozen=True, slots=True)
class Backup:
    """What was copied."""

    source: Path
    target: Path
    pages: int
    size_bytes: int
    schema_version: int | None
    rows: dict[str, int]
    latest_state_ms: int | None
    """The newest state change in the copy: the backup point, in event time."""
    took_s: float

    def describe(self) -> list[str]:
        """The report ``pilotline backup`` prints."""
        latest = "none" if self.latest_state_ms is None else iso(self.latest_state_ms)
        lines = [
            f"copied {self.source} to {self.target}",
            f"{self.pages} pages, {self.size_bytes} bytes, schema version "
            f"{self.schema_version}, integrity ok, {self.took_s:.2f} s",
            f"latest state change: {latest}",
        ]
        width = max((len(name) for name in self.rows), default=0)
        lines.extend(f"{name:<{width}}  {count}" for name, count in self.rows.items())
        return lines


def default_name(store: Path, now_ms: int) -> str:
    """``<store stem>-<UTC time>.db``: the name a backup gets in a target folder."""
    stamp = datetime.fromtimestamp(now_ms // 1000, tz=UTC).strftime("%Y%m%dT%H%M%SZ")
    return f"{store.stem}-{stamp}{store.suffix or '.db'}"


def backup(store: Path, to: Path, *, now_ms: int, overwrite: bool = False) -> Backup:
    """Copy ``store`` to ``to`` (a file, or an existing folder: then a stamped name in it).

    Raises ``StoreError`` if there is no store, the target exists (without ``overwrite``) or
    is the store itself, or the copy fails its integrity check (then no target is left)."""
    started = time.monotonic()
    if not store.is_file():
        raise StoreError(store, "no store here (is store: in the configuration right?)")
    target = to / default_name(store, now_ms) if to.is_dir() else to
    if target.resolve() == store.resolve():
        raise StoreError(target, "is the store itself: back up to another file")
    if target.exists() and not overwrite:
        raise StoreError(target, "exists: choose another name, or --overwrite")
    if not target.parent.is_dir():
        raise StoreError(target, f"no folder {target.parent}")
    partial = target.with_name(f".{target.name}.partial-{os.getpid()}")
    try:
        _copy(store, partial)
        result = _inspect(partial)
        _durable(partial)
        partial.replace(target)
        _durable(target.parent)
    finally:
        for leftover in (partial, *(Path(f"{partial}{s}") for s in ("-wal", "-shm", "-journal"))):
            with contextlib.suppress(FileNotFoundError):
                leftover.unlink()
    pages, size, version, rows, latest = result
    return Backup(
        source=store,
        target=target,
        pages=pages,
        size_bytes=size,
        schema_version=version,
        rows=rows,
        latest_state_ms=latest,
        took_s=time.monotonic() - started,
    )


def _copy(store: Path, partial: Path) -> None:
    source_uri = f"{store.absolute().as_uri()}?mode=ro"
    try:
        source = sqlite3.connect(source_uri, uri=True)
    except sqlite3.Error as exc:
        raise StoreError(store, f"cannot open read-only: {exc}") from None
    try:
        source.execute("PRAGMA busy_timeout = 5000")
        owner_only(partial)  # created 0600 before SQLite writes a page into it
        copy = sqlite3.connect(partial)
        try:
            source.backup(copy, pages=-1)  # one step, one snapshot (see the module's text)
        finally:
            copy.close()
    except sqlite3.Error as exc:
        raise StoreError(store, f"backup failed: {exc}") from None
    finally:
        source.close()


def _inspect(partial: Path) -> tuple[int, int, int | None, dict[str, int], int | None]:
    """Check the copy and count what it holds: pages, bytes, schema version, rows, the
    newest state change."""
    copy = sqlite3.connect(partial)
    try:
        problems = [row[0] for row in copy.execute("PRAGMA integrity_check")]
        if problems != ["ok"]:
            raise StoreError(partial, f"the copy fails its integrity check: {problems[:5]}")
        pages = int(copy.execute("PRAGMA page_count").fetchone()[0])
        version = None
        with contextlib.suppress(sqlite3.OperationalError):
            version = copy.execute("SELECT MAX(version) FROM schema_version").fetchone()[0]
        rows = {}
        for name, sql in COUNTED:
            with contextlib.suppress(sqlite3.OperationalError):  # a table an older file lacks
                rows[name] = int(copy.execute(sql).fetchone()[0])
        latest = None
        with contextlib.suppress(sqlite3.OperationalError):
            latest = copy.execute("SELECT MAX(ts_ms) FROM state_history").fetchone()[0]
    except sqlite3.Error as exc:
        raise StoreError(partial, f"the copy cannot be read: {exc}") from None
    finally:
        copy.close()
    return pages, partial.stat().st_size, version, rows, latest


def _durable(path: Path) -> None:
    """fsync a file or folder: the copy is on disk before it has its name, the name after."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
