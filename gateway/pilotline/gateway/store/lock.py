"""One writer per store: an exclusive lock on ``<store>.lock`` for as long as a gateway runs.

Two gateways on one store (a systemd unit and a manual start) would take the broker
session from each other and interleave their writes. ``StoreLock.acquire`` takes an
exclusive ``flock`` on a file beside the store and writes the holder's pid, host and start
time into it; a second process finds the lock taken and is told who holds it
(``StoreInUseError``). The kernel releases a ``flock`` when the last descriptor of the open file
is closed, which happens also when the process is killed: a SIGKILLed gateway never blocks
its successor, and a stale pid left in the file means nothing (only the lock counts).

Why a file of its own rather than a lock on the store file: SQLite holds POSIX record locks
on the store, which a process loses when it closes *any* descriptor of that file; and
``pilotline replay --overwrite`` deletes a store's files, which would orphan a lock taken on
them. The lock file is never deleted either: a process could then lock a new file while
another still holds the old one.

The descriptor is not inherited by child processes (Python's default, PEP 446), so a
process the gateway starts cannot keep the lock alive after the gateway died.

``flock`` is advisory and holds between the processes of one host (containers sharing a
volume on one host included), not across hosts on a network file system, where SQLite's
WAL mode does not work anyway. Readers and short writers (``pilotline token``, tests that
look into a running gateway's store) take no lock: SQLite's locking keeps them safe.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import socket
from dataclasses import dataclass
from pathlib import Path

from pilotline.gateway.clock import wall_clock_ms
from pilotline.gateway.store.errors import StoreError
from pilotline.gateway.timefmt import iso

__all__ = ["Holder", "StoreInUseError", "StoreLock", "lock_path"]


def lock_path(store: Path) -> Path:
    """The lock file of ``store``: ``<store>.lock`` beside it."""
    return store.with_name(f"{store.name}.lock")


@dataclass(frozen=True, slots=True)
class Holder:
    """Who holds a store's lock, as its holder wrote it (None: not written, or unreadable)."""

    pid: int | None = None
    host: str | None = None
    started: str | None = None  # ISO 8601 UTC

    def describe(self) -> str:
        if self.pid is None:
            return "another process (it wrote no pid yet)"
        where = "" if self.host is None or self.host == socket.gethostname() else f" on {self.host}"
        since = f", running since {self.started}" if self.started else ""
        return f"pid {self.pid}{where}{since}"


class StoreInUseError(StoreError):
    """Another process holds the store's lock: one gateway per store."""

    def __init__(self, path: Path, holder: Holder) -> None:
        super().__init__(
            path,
            f"in use by another pilotline process ({holder.describe()}); one gateway per "
            "store: stop that one first, or give this configuration its own store: path",
        )
        self.holder = holder


class StoreLock:
    """An exclusive lock on a store, held from ``acquire`` until ``release``."""

    __slots__ = ("_fd", "path")

    def __init__(self, path: Path, fd: int) -> None:
        self.path = path
        self._fd: int | None = fd

    @classmethod
    def acquire(cls, store: Path) -> StoreLock:
        """Lock ``store`` (its directory must exist) or raise ``StoreInUseError`` at once."""
        path = lock_path(store)
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = _read_holder(fd)
            os.close(fd)
            raise StoreInUseError(store, holder) from None
        except BaseException:
            os.close(fd)
            raise
        record = {"pid": os.getpid(), "host": socket.gethostname(), "started": iso(wall_clock_ms())}
        data = (json.dumps(record) + "\n").encode()
        os.ftruncate(fd, 0)
        os.pwrite(fd, data, 0)
        return cls(path, fd)

    @classmethod
    def check(cls, store: Path) -> None:
        """Raise ``StoreInUseError`` if a process holds ``store``'s lock (take it, let go)."""
        if store.parent.is_dir():
            cls.acquire(store).release()

    def release(self) -> None:
        """Let the lock go (closing the descriptor releases it); the file stays."""
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None

    def __del__(self) -> None:
        # A lock whose owner was dropped unclosed (a store never closed) goes with it, as a
        # dropped SQLite connection does: no descriptor leaks.
        with contextlib.suppress(OSError):
            self.release()


def _read_holder(fd: int) -> Holder:
    with contextlib.suppress(OSError, ValueError):
        record = json.loads(os.pread(fd, 4096, 0).decode())
        if isinstance(record, dict):
            pid, host, started = record.get("pid"), record.get("host"), record.get("started")
            return Holder(
                pid=pid if isinstance(pid, int) else None,
                host=host if isinstance(host, str) else None,
                started=started if isinstance(started, str) else None,
            )
    return Holder()
