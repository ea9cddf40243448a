"""The store's SQLite connection, and the one way to make several statements one transaction.

The connection is opened with ``isolation_level=None``: Python starts no transaction of its
own. A single statement is atomic by itself (SQLite's autocommit). Statements that must be
durable together run inside ``Transaction``: ``BEGIN IMMEDIATE`` (the write lock at once, so
a second process waits ``busy_timeout`` at the start rather than failing at ``COMMIT``) ...
``COMMIT``, or ``ROLLBACK`` if the block raises.

The file and its ``-wal`` and ``-shm`` companions are readable by their owner only (0600): they
hold the API's token hashes and quarantined raw payloads. ``connect`` creates the file with
that mode before SQLite opens it (as the OPC UA client key is created), since SQLite gives the
companions it creates the database file's mode, whatever the umask; files an older version
left wider are narrowed, with a ``store.permissions_narrowed`` warning (``store.permissions_wide``
when this process may not change them).

A table family's method that takes a ``Transaction`` writes inside the caller's transaction;
that is how ``Store.commit()`` makes everything a batch of work caused durable together.
What such a method keeps in memory (counters that must follow only what is durable) it
changes in a callback registered with ``after_commit``.
"""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Callable, Sequence
from pathlib import Path
from types import TracebackType
from typing import Any, Final

import structlog

from pilotline.gateway.store.errors import StoreError

log = structlog.get_logger("pilotline.gateway.store")

OWNER_ONLY: Final = 0o600
COMPANIONS: Final = ("-wal", "-shm", "-journal")
"""The files SQLite keeps beside the database (WAL, its shared-memory index, a rollback
journal)."""

SYNCHRONOUS = frozenset({"NORMAL", "FULL", "EXTRA"})
"""The ``synchronous`` settings that keep a committed transaction (``OFF`` does not)."""


def connect(path: Path) -> sqlite3.Connection:
    owner_only(path)
    # isolation_level=None: no implicit transactions; ``Transaction`` opens them.
    return sqlite3.connect(path, isolation_level=None)


def owner_only(path: Path) -> None:
    """Create ``path`` (if absent) readable by its owner only; narrow it and its companions
    to owner-only if they are wider."""
    try:
        os.close(os.open(path, os.O_RDONLY | os.O_CREAT, OWNER_ONLY))
    except OSError as exc:
        raise StoreError(path, f"cannot open: {exc.strerror}") from None
    for file in (path, *(path.with_name(path.name + suffix) for suffix in COMPANIONS)):
        try:
            mode = stat.S_IMODE(file.stat().st_mode)
            if mode & 0o077:
                file.chmod(mode & 0o700)
                log.warning("store.permissions_narrowed", file=str(file), was=oct(mode))
        except FileNotFoundError:
            continue
        except PermissionError:  # another user's file (a CLI run as someone else): say so
            log.warning("store.permissions_wide", file=str(file), mode=oct(mode))


def configure(db: sqlite3.Connection, path: Path, synchronous: str) -> None:
    """Rows by name, wait for another process's write lock, WAL journal, ``synchronous``."""
    db.row_factory = sqlite3.Row
    db.execute("PRAGMA busy_timeout = 5000")
    mode = db.execute("PRAGMA journal_mode = WAL").fetchone()[0]
    if str(mode).lower() != "wal":
        raise StoreError(path, f"cannot use WAL journal mode (got {mode})")
    db.execute(f"PRAGMA synchronous = {synchronous}")


class Transaction:
    """``with Transaction(db) as tx:``: the block's statements are committed together, or
    rolled back if it raises (then the exception goes on)."""

    __slots__ = ("_after", "_db")

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db
        self._after: list[Callable[[], None]] = []

    def after_commit(self, callback: Callable[[], None]) -> None:
        """Call ``callback`` once the transaction is committed; never if it is rolled back."""
        self._after.append(callback)

    def __enter__(self) -> Transaction:
        self._db.execute("BEGIN IMMEDIATE")
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if exc_type is not None:
            self._db.execute("ROLLBACK")
            return
        try:
            self._db.execute("COMMIT")
        except BaseException:
            self._db.execute("ROLLBACK")
            raise
        for callback in self._after:
            callback()


def rows(
    db: sqlite3.Connection, sql: str, params: Sequence[Any] = (), *, bools: tuple[str, ...] = ()
) -> list[dict[str, Any]]:
    """The result as dicts (column: value), with the ``bools`` columns (0/1) as bools."""
    result = [dict(row) for row in db.execute(sql, params)]
    for row in result:
        for name in bools:
            row[name] = bool(row[name])
    return result
