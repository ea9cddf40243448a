"""One SQLite file: the durable outbox of InfluxDB lines and the embedded store.

Theory of operation: the gateway calls ``Store.commit()`` once per batch of work (a
sample's lines and events, a timer tick's events, quarantined input). It is ONE transaction:
lines are appended to the outbox, the embedded tables are brought up to date, checkpoints,
notifications and quarantine rows are kept, or nothing is. When ``commit()`` returns the
data is durable: in WAL mode with ``synchronous=NORMAL`` a committed transaction survives a
killed process (it is in the WAL file the OS holds); ``synchronous="FULL"`` also survives a
power loss, at the price of an fsync per commit. That is what lets the gateway ack an MQTT
message only after everything it caused is committed.

``Store`` owns the connection (db.py: pragmas, ``Transaction``), brings the file's schema up
to date when it opens (schema.py), and holds one object per family of tables, each the only
writer of its tables:

- ``outbox``: the outbox batches and dead letters, with the limit (outbox.py);
- ``plant``: machines, idle windows, capacity, zone capacity, state history (plant.py);
- ``resume``: each machine's tracker checkpoint (resume.py);
- ``quarantined``: input the gateway would not use (quarantine.py);
- ``notifications``: the notification outbox (notifications.py);
- ``reports``: the periodic reports already written (reports.py);
- ``alerts``: alert cores' checkpoints, silences, acknowledgements (alert_state.py);
- ``api_tokens``: the API's hashed tokens (tokens.py);
- ``booking``: reservations, their status history, idempotency keys (reservations.py);
- ``interlock``: the interlock signal last sent per machine, with its seq (interlock.py);
- ``feeds``: calendar feed tokens, hashed (feed_tokens.py);
- ``booking_notices``: the reservation events already queued as notifications
  (booking_notices.py);
- ``retention``: pruning the history tables of rows older than their retention
  (retention.py).

``commit()`` and ``commit_report()`` compose their writes inside one ``Transaction``; the
rest of ``Store``'s methods delegate to a family, for the many callers written against them.

The store is used from the event-loop thread only (one connection, no locks). Reads for
the HTTP API are small indexed queries on the same connection. One process writes it: the
gateway opens it ``exclusive`` (lock.py), so a second gateway on the same file refuses to
start; ``pilotline token`` and readers open it without the lock.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Collection, Sequence
from pathlib import Path
from typing import Any

from pilotline.gateway.store.alert_state import AlertStateStore
from pilotline.gateway.store.booking_notices import BookingNotices
from pilotline.gateway.store.db import SYNCHRONOUS, Transaction, configure, connect, rows
from pilotline.gateway.store.errors import StoreError
from pilotline.gateway.store.feed_tokens import FeedTokens
from pilotline.gateway.store.interlock import InterlockSignals
from pilotline.gateway.store.lock import StoreInUseError, StoreLock
from pilotline.gateway.store.notifications import Notifications
from pilotline.gateway.store.outbox import LINES_PER_BATCH, Outbox, OutboxDrop
from pilotline.gateway.store.plant import Plant, changes
from pilotline.gateway.store.quarantine import HEAD_LIMIT, Quarantine, QuarantineRow
from pilotline.gateway.store.reports import Reports
from pilotline.gateway.store.reservations import Reservations
from pilotline.gateway.store.resume import ResumePoints
from pilotline.gateway.store.retention import Retention
from pilotline.gateway.store.schema import SCHEMA_VERSION, migrate
from pilotline.gateway.store.tokens import TokenRegistry
from pilotline.rules.events import Event
from pilotline.rules.machine import Checkpoint

__all__ = [
    "HEAD_LIMIT",
    "LINES_PER_BATCH",
    "SCHEMA_VERSION",
    "OutboxDrop",
    "QuarantineRow",
    "Store",
    "StoreError",
    "StoreInUseError",
    "Transaction",
]


class Store:
    def __init__(
        self,
        path: Path,
        *,
        synchronous: str = "NORMAL",
        quarantine_limit: int = 10_000,
        dead_letter_limit: int = 100_000,
        outbox_max_points: int | None = None,
        exclusive: bool = False,
        outbox_max_bytes: int | None = None,
    ) -> None:
        """``exclusive``: hold the store's lock while open (the gateway's one writer, lock.py);
        raises ``StoreInUseError`` naming the process that holds it."""
        synchronous = synchronous.upper()
        if synchronous not in SYNCHRONOUS:
            raise ValueError(f"synchronous must be one of {sorted(SYNCHRONOUS)}")
        if quarantine_limit < 1 or dead_letter_limit < 1:
            raise ValueError("quarantine_limit and dead_letter_limit must be positive")
        if outbox_max_points is not None and outbox_max_points < 1:
            raise ValueError("outbox_max_points must be positive")
        if outbox_max_bytes is not None and outbox_max_bytes < 1:
            raise ValueError("outbox_max_bytes must be positive")
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # The lock before the first statement: a second gateway touches nothing.
        self._lock = StoreLock.acquire(self.path) if exclusive else None
        try:
            self._db = db = connect(self.path)
        except BaseException:
            self._release()
            raise
        try:
            configure(db, self.path, synchronous)
            migrate(db, self.path)
            self.outbox = Outbox(
                db,
                max_points=outbox_max_points,
                max_bytes=outbox_max_bytes,
                dead_letter_limit=dead_letter_limit,
            )
            self.plant = Plant(db)
            self.resume = ResumePoints(db)
            self.quarantined = Quarantine(db, limit=quarantine_limit)
            self.notifications = Notifications(db)
            self.reports = Reports(db)
            self.alerts = AlertStateStore(db)
            self.api_tokens = TokenRegistry(db)
            self.booking = Reservations(db)
            self.interlock = InterlockSignals(db)
            self.feeds = FeedTokens(db)
            self.booking_notices = BookingNotices(db, self.notifications)
            self.retention = Retention(db)
            self.resume.compact()
        except sqlite3.DatabaseError as exc:
            db.close()
            self._release()
            raise StoreError(self.path, str(exc)) from exc
        except BaseException:
            db.close()
            self._release()
            raise

    # -- writes ------------------------------------------------------------------------------

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
        append = outbox and len(lines) > 0
        plant = changes(events)
        if not (
            append
            or plant is not None
            or quarantined
            or resume
            or notifications
            or alert_state
        ):
            return
        with Transaction(self._db) as tx:
            if append:
                self.outbox.append(tx, lines, now_ms)
            if plant is not None:
                self.plant.apply(tx, plant)
            if resume:
                self.resume.keep(tx, resume)
            if notifications:
                self.notifications.queue(tx, notifications, now_ms)
            if alert_state:
                self.alerts.put(tx, alert_state, now_ms)
            if quarantined:
                self.quarantined.insert(tx, quarantined)

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
        with Transaction(self._db) as tx:
            if outbox and len(lines) > 0:
                self.outbox.append(tx, lines, now_ms)
            self.reports.mark_written(tx, kind, period_ms, now_ms)

    # -- families ----------------------------------------------------------------------------

    def alert_state(self) -> AlertStateStore:
        """Alert checkpoints, silences and acknowledgements kept in this file."""
        return self.alerts

    def tokens(self) -> TokenRegistry:
        """The API tokens kept in this file (``pilotline token``, the API's authentication)."""
        return self.api_tokens

    def reservations(self) -> Reservations:
        """The bookings kept in this file: requests (check and insert in one transaction),
        their lifecycle, idempotency keys."""
        return self.booking

    def interlock_signals(self) -> InterlockSignals:
        """The interlock signals last sent, one per machine, with their seq."""
        return self.interlock

    # -- delegations, for the callers written against them -----------------------------------

    def machines(self) -> list[dict[str, Any]]:
        return self.plant.machines()

    def capacity(self) -> list[dict[str, Any]]:
        return self.plant.capacity()

    def zone_capacity(self) -> list[dict[str, Any]]:
        return self.plant.zone_capacity()

    def windows(
        self,
        since_ms: int,
        machine: str | None = None,
        limit: int = 1000,
        *,
        among: Collection[str] | None = None,
        after: tuple[int, str] | None = None,
    ) -> list[dict[str, Any]]:
        return self.plant.windows(since_ms, machine, limit, among=among, after=after)

    def state_history(self, from_ms: int, to_ms: int) -> list[dict[str, Any]]:
        return self.plant.state_history(from_ms, to_ms)

    def first_state_ms(self) -> int | None:
        return self.plant.first_state_ms()

    def resume_points(self) -> list[Checkpoint]:
        return self.resume.points()

    def last_report(self, kind: str) -> int | None:
        return self.reports.last(kind)

    def quarantine(self, limit: int = 100, before_id: int | None = None) -> list[dict[str, Any]]:
        return self.quarantined.newest(limit, before_id)

    def quarantine_count(self) -> int:
        return self.quarantined.count()

    @property
    def outbox_max_points(self) -> int | None:
        return self.outbox.max_points

    @property
    def outbox_max_bytes(self) -> int | None:
        return self.outbox.max_bytes

    @property
    def outbox_dropped(self) -> dict[int, int]:
        return self.outbox.dropped

    @property
    def last_drop(self) -> OutboxDrop | None:
        return self.outbox.last_drop

    def outbox_depth(self) -> int:
        return self.outbox.depth()

    def outbox_bytes(self) -> int:
        return self.outbox.bytes()

    def outbox_depth_by_priority(self) -> dict[int, int]:
        return self.outbox.depth_by_priority()

    def outbox_lines(self, limit: int) -> tuple[int, list[str]]:
        return self.outbox.lines(limit)

    def outbox_peek(self, limit: int) -> list[tuple[int, str]]:
        return self.outbox.peek(limit)

    def outbox_delete(self, upto_id: int) -> None:
        self.outbox.delete(upto_id)

    def outbox_dead_letter(
        self, upto_id: int, *, now_ms: int, status: int | None, error: str
    ) -> int:
        return self.outbox.dead_letter(upto_id, now_ms=now_ms, status=status, error=error)

    def outbox_oldest_ms(self) -> int | None:
        return self.outbox.oldest_ms()

    def dead_letter(self, limit: int = 100) -> list[dict[str, Any]]:
        return self.outbox.dead_letters(limit)

    def dead_letter_count(self) -> int:
        return self.outbox.dead_letter_count()

    def notification_next(self, channel: str) -> tuple[int, str, int, int] | None:
        return self.notifications.oldest(channel)

    def notification_delete(self, notification_id: int) -> None:
        self.notifications.delete(notification_id)

    def notification_retry(self, notification_id: int, *, next_ms: int) -> None:
        self.notifications.retry(notification_id, next_ms=next_ms)

    def notifications_waiting(self, channel: str | None = None) -> int:
        return self.notifications.waiting(channel)

    def _rows(
        self, sql: str, params: Sequence[Any] = (), *, bools: tuple[str, ...] = ()
    ) -> list[dict[str, Any]]:
        """Tests' window on any table."""
        return rows(self._db, sql, params, bools=bools)

    # -- lifetime ----------------------------------------------------------------------------

    def close(self) -> None:
        self._db.close()
        self._release()

    def _release(self) -> None:
        if self._lock is not None:
            self._lock.release()
            self._lock = None

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()
