"""Reservations (issue 15) in the store's SQLite file: the bookings, their status history, and
the idempotency keys that make a retried request harmless (schema version 8).

Theory of operation. ``request`` is the one place a reservation is born, and it is ONE
``BEGIN IMMEDIATE`` transaction: read the machine's live reservations near the request (and
the tenant's ones in its quota period), ask the pure core (``pilotline.rules.booking.check``),
insert the new row as ``held``. ``BEGIN IMMEDIATE`` takes SQLite's write lock before the read,
so no other connection, thread or process can insert between the check and the insert: two
live reservations of one machine never overlap, buffers included, whatever the concurrency
(tests/gateway/test_reservations_store.py races 100 threads and 2 processes on one file).

History is never edited: a row's times, tenant and purpose are written once; only ``status``
(with ``updated_ms``) moves along the lifecycle, and every move is appended to
``reservation_events`` (status, time, who, note). A move or an extension is a new reservation
whose ``predecessor`` is the old one (``Request.replaces``).

A hold that is due is expired before anything reads the machine's reservations (``request``,
``confirm``, a replayed key), so a stale hold never blocks a slot, turns into a booking, nor
is answered as ``held``, whether or not ``expire_holds`` has run yet.

Idempotency: ``(tenant, key)`` → the reservation an accepted request created and the
fingerprint (SHA-256) of that request. The same key with the same request answers with the
same reservation (as it is now); the same key with another request is refused (rule
``idempotency``). Only accepted requests keep their key: a refused or conflicting request
wrote nothing, so asking again is harmless by itself.

Each method runs its own transaction on the store's connection; this class is the only
writer of the three tables.
"""

from __future__ import annotations

import builtins
import hashlib
import json
import secrets
import sqlite3
from collections.abc import Collection, Sequence
from dataclasses import dataclass
from typing import Final

from pilotline.gateway.store.db import Transaction
from pilotline.rules.booking import (
    LIVE,
    Accepted,
    BookingRules,
    Interval,
    Refused,
    Request,
    Reservation,
    Status,
    Verdict,
    check,
)
from pilotline.rules.booking.change import change_kind, refuse_change, successor_status
from pilotline.rules.booking.check import MONDAY_MS

__all__ = [
    "MAX_KEY_CHARS",
    "RESERVATIONS_SCHEMA",
    "Booked",
    "ReservationError",
    "Reservations",
]

RESERVATIONS_SCHEMA: Final = (
    """CREATE TABLE IF NOT EXISTS reservations (
        id TEXT PRIMARY KEY,
        machine TEXT NOT NULL,
        tenant TEXT NOT NULL,
        start_ms INTEGER NOT NULL,
        end_ms INTEGER NOT NULL,
        status TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        predecessor TEXT,
        purpose TEXT NOT NULL,
        hold_until_ms INTEGER,
        updated_ms INTEGER NOT NULL
    )""",
    # the conflict check: a machine's reservations ending after a time
    "CREATE INDEX IF NOT EXISTS reservations_machine_end ON reservations (machine, end_ms)",
    "CREATE INDEX IF NOT EXISTS reservations_tenant_end ON reservations (tenant, end_ms)",
    # the holds due, looked for before every request: without it, a scan of the machine's
    # whole history (benchmarks/README.md, "Booking": 25x slower with 100,000 past bookings)
    "CREATE INDEX IF NOT EXISTS reservations_hold ON reservations (status, hold_until_ms)",
    """CREATE TABLE IF NOT EXISTS reservation_events (
        id INTEGER PRIMARY KEY,
        reservation TEXT NOT NULL,
        status TEXT NOT NULL,
        at_ms INTEGER NOT NULL,
        by TEXT NOT NULL,
        note TEXT NOT NULL
    )""",
    """CREATE INDEX IF NOT EXISTS reservation_events_reservation
        ON reservation_events (reservation, id)""",
    # a predecessor's successor (``change``): an index, no new column, so no version bump
    "CREATE INDEX IF NOT EXISTS reservations_predecessor ON reservations (predecessor)",
    """CREATE TABLE IF NOT EXISTS idempotency (
        tenant TEXT NOT NULL,
        key TEXT NOT NULL,
        reservation TEXT NOT NULL,
        fingerprint TEXT NOT NULL,
        created_ms INTEGER NOT NULL,
        PRIMARY KEY (tenant, key)
    )""",
)

MAX_KEY_CHARS: Final = 255
"""Longer Idempotency-Key values are refused (a key is an id, not a payload)."""

_LIVE: Final = tuple(sorted(s.value for s in LIVE))
_COLUMNS: Final = (
    "id, machine, tenant, start_ms, end_ms, status, created_ms, predecessor, purpose,"
    " hold_until_ms"
)


class ReservationError(ValueError):
    """A lifecycle step that cannot be done: no such reservation, or not in a status the step
    starts from. The message says which and why."""


@dataclass(frozen=True, slots=True)
class Booked:
    """``request``'s answer: the verdict, and the stored reservation when accepted.
    ``replayed``: the answer to an earlier request with the same idempotency key."""

    verdict: Verdict
    reservation: Reservation | None = None
    replayed: bool = False


def _fingerprint(req: Request, purpose: str) -> str:
    what = [req.machine, req.tenant, req.start_ms, req.end_ms, req.replaces, purpose]
    return hashlib.sha256(json.dumps(what).encode()).hexdigest()


def _reservation(row: sqlite3.Row) -> Reservation:
    rid, machine, tenant, start, end, status, created, predecessor, purpose, hold = row
    return Reservation(
        id=str(rid),
        machine=str(machine),
        tenant=str(tenant),
        start_ms=int(start),
        end_ms=int(end),
        status=Status(status),
        created_ms=int(created),
        predecessor=None if predecessor is None else str(predecessor),
        purpose=str(purpose),
        hold_until_ms=None if hold is None else int(hold),
    )


class Reservations:
    """The ``reservations``, ``reservation_events`` and ``idempotency`` tables on the store's
    connection."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self._db = db

    # -- the one way in ----------------------------------------------------------------------

    def request(
        self,
        req: Request,
        rules: BookingRules,
        offered: Sequence[Interval],
        now_ms: int,
        *,
        key: str | None = None,
        purpose: str = "",
    ) -> Booked:
        """Check ``req`` against ``rules``, the machine's ``offered`` intervals and its live
        reservations, and hold it (``held`` until ``hold_until_ms``) if it is bookable; all in
        one transaction. ``key``: the caller's Idempotency-Key (per tenant)."""
        if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
            return Booked(Refused("idempotency", f"an Idempotency-Key has 1-{MAX_KEY_CHARS} "
                                                 "characters"))
        fingerprint = _fingerprint(req, purpose)
        with Transaction(self._db) as tx:
            # first, so that a replayed key answers a due hold as it is: expired
            self._expire(tx, now_ms, machine=req.machine)
            if key is not None:
                seen = self._db.execute(
                    "SELECT reservation, fingerprint FROM idempotency WHERE tenant = ? AND key = ?",
                    (req.tenant, key),
                ).fetchone()
                if seen is not None:
                    if seen[1] != fingerprint:
                        return Booked(Refused(
                            "idempotency",
                            "this Idempotency-Key was already used for a different request:"
                            " send the same request again, or use a new key",
                        ))
                    res = self.get(seen[0])
                    if res is None:  # rows are never deleted, so never
                        raise ReservationError(f"key {key!r} names no reservation")
                    return Booked(Accepted(res.hold_until_ms or 0), res, replayed=True)
            if req.replaces is not None:
                old = self.get(req.replaces)
                if old is None or (old.machine, old.tenant) != (req.machine, req.tenant):
                    return Booked(Refused("replaces", f"no reservation {req.replaces} of this"
                                                      " tenant on this machine"))
                if not old.live:
                    return Booked(Refused("replaces", f"{old.id} is {old.status.value}: only"
                                                      " a live reservation can be moved"))
            verdict = check(req, rules, self._near(req, rules, offered), offered, now_ms)
            if not isinstance(verdict, Accepted):
                return Booked(verdict)
            res = Reservation(
                id=f"r_{secrets.token_urlsafe(12)}",
                machine=req.machine,
                tenant=req.tenant,
                start_ms=req.start_ms,
                end_ms=req.end_ms,
                status=Status.HELD,
                created_ms=now_ms,
                predecessor=req.replaces,
                purpose=purpose,
                hold_until_ms=verdict.hold_until_ms,
            )
            self._db.execute(
                f"INSERT INTO reservations ({_COLUMNS}, updated_ms)"  # noqa: S608 (constants, values bound) # nosec B608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (res.id, res.machine, res.tenant, res.start_ms, res.end_ms, res.status.value,
                 now_ms, res.predecessor, purpose, res.hold_until_ms, now_ms),
            )
            self._event(res.id, Status.HELD, now_ms, req.tenant, "")
            if key is not None:
                self._db.execute(
                    "INSERT INTO idempotency (tenant, key, reservation, fingerprint, created_ms)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (req.tenant, key, res.id, fingerprint, now_ms),
                )
            return Booked(verdict, res)

    def _near(
        self, req: Request, rules: BookingRules, offered: Sequence[Interval]
    ) -> builtins.list[Reservation]:
        """What ``check`` needs of the machine: its live reservations that could clash with
        the request or with the alternatives it proposes (within the offered intervals), and
        the tenant's reservations in the request's quota period. Of this machine only:
        ``check`` takes every reservation it is given as the machine's (a quota across an
        owner's machines would need the core to tell them apart)."""
        low = min([req.start_ms, *(start for start, _ in offered)]) - rules.buffer_ms
        high = max([req.end_ms, *(end for _, end in offered)]) + rules.buffer_ms
        marks = ", ".join("?" * len(_LIVE))
        found = {
            res.id: res
            for res in self._select(
                f"machine = ? AND end_ms > ? AND start_ms < ? AND status IN ({marks})",
                (req.machine, low, high, *_LIVE),
            )
        }
        if rules.quota_ms:
            period = rules.quota_period_ms
            p_start = req.start_ms - (req.start_ms - MONDAY_MS) % period
            for res in self._select(
                f"machine = ? AND tenant = ? AND end_ms > ? AND start_ms < ?"
                f" AND status IN ({marks})",
                (req.machine, req.tenant, p_start, p_start + period, *_LIVE),
            ):
                found[res.id] = res
        return list(found.values())

    # -- a move or an extension: a successor, never an edit --------------------------------

    def change(
        self,
        rid: str,
        start_ms: int,
        end_ms: int,
        now_ms: int,
        *,
        rules: BookingRules,
        offered: Sequence[Interval],
        by: str,
        approval: bool = False,
        key: str | None = None,
    ) -> Booked:
        """Move or extend live ``rid`` to ``[start_ms, end_ms)`` in ONE transaction: check the
        successor as ``request`` checks a new booking (``Request.replaces``: the predecessor's
        own time does not clash with it) and the rules of a change (``rules/booking/change.py``:
        an active booking keeps its start, close to the start a booking can only grow), insert
        it with ``predecessor`` = ``rid`` in the predecessor's status (``successor_status``;
        ``approval``: the owner approves and the tenant asks), and cancel ``rid`` with the
        note "extended|shortened|moved to <successor>". ``key``: as ``request``'s, per tenant.
        ReservationError: no such reservation, or not live."""
        if key is not None and not 0 < len(key) <= MAX_KEY_CHARS:
            return Booked(Refused("idempotency", f"an Idempotency-Key has 1-{MAX_KEY_CHARS} "
                                                 "characters"))
        with Transaction(self._db) as tx:
            old = self.get(rid)
            if old is None:
                raise ReservationError(f"no reservation {rid}")
            req = Request(old.machine, old.tenant, start_ms, end_ms, replaces=rid)
            fingerprint = _fingerprint(req, old.purpose)
            self._expire(tx, now_ms, machine=old.machine)  # before a replay, as ``request``
            if key is not None:
                replayed = self._replay(req.tenant, key, fingerprint)
                if replayed is not None:
                    return replayed
            old = self.get(rid) or old
            if not old.live:
                raise ReservationError(
                    f"{rid} is {old.status.value}: only a live reservation can change"
                )
            status = successor_status(old, approval=approval)
            if isinstance(status, Refused):
                return Booked(status)
            refused = refuse_change(old, start_ms, end_ms, rules, now_ms)
            if refused is not None:
                return Booked(refused)
            near = self._near(req, rules, offered)
            if all(r.id != rid for r in near):
                near.append(old)  # check finds the granted time it keeps here
            verdict = check(req, rules, near, offered, now_ms)
            if not isinstance(verdict, Accepted):
                return Booked(verdict)
            new = Reservation(
                id=f"r_{secrets.token_urlsafe(12)}", machine=old.machine, tenant=old.tenant,
                start_ms=start_ms, end_ms=end_ms, status=status, created_ms=now_ms,
                predecessor=rid, purpose=old.purpose,
                hold_until_ms=verdict.hold_until_ms if status is Status.HELD else None,
            )
            self._db.execute(
                f"INSERT INTO reservations ({_COLUMNS}, updated_ms)"  # noqa: S608 (constants, values bound) # nosec B608
                " VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (new.id, new.machine, new.tenant, new.start_ms, new.end_ms, new.status.value,
                 now_ms, rid, new.purpose, new.hold_until_ms, now_ms),
            )
            kind = change_kind(old, start_ms, end_ms)
            self._event(new.id, new.status, now_ms, by, f"{kind} from {rid}")
            self._move(rid, LIVE, Status.CANCELLED, now_ms, by=by, note=f"{kind} to {new.id}")
            if key is not None:
                self._db.execute(
                    "INSERT INTO idempotency (tenant, key, reservation, fingerprint, created_ms)"
                    " VALUES (?, ?, ?, ?, ?)",
                    (req.tenant, key, new.id, fingerprint, now_ms),
                )
            return Booked(verdict, new)

    def _replay(self, tenant: str, key: str, fingerprint: str) -> Booked | None:
        """Inside a transaction: the answer to an earlier accepted request with ``key``, a
        refusal if that request was another, or None (a new key)."""
        seen = self._db.execute(
            "SELECT reservation, fingerprint FROM idempotency WHERE tenant = ? AND key = ?",
            (tenant, key),
        ).fetchone()
        if seen is None:
            return None
        if seen[1] != fingerprint:
            return Booked(Refused(
                "idempotency",
                "this Idempotency-Key was already used for a different request: send the"
                " same request again, or use a new key",
            ))
        res = self.get(seen[0])
        if res is None:  # rows are never deleted, so never
            raise ReservationError(f"key {key!r} names no reservation")
        return Booked(Accepted(res.hold_until_ms or 0), res, replayed=True)

    def successors(self, ids: Collection[str]) -> dict[str, str]:
        """Of ``ids``, those a change succeeded: predecessor id → successor id."""
        if not ids:
            return {}
        marks = ", ".join("?" * len(ids))
        return {
            str(row[0]): str(row[1])
            for row in self._db.execute(
                f"SELECT predecessor, id FROM reservations WHERE predecessor IN ({marks})"  # noqa: S608 # nosec B608
                " ORDER BY created_ms, id",
                tuple(ids),
            )
        }

    # -- the lifecycle -----------------------------------------------------------------------

    def confirm(self, rid: str, now_ms: int, *, approval: bool, by: str) -> Reservation:
        """``held`` → ``confirmed``, or ``requested`` when the machine's rules ask for the
        owner's ``approval``. A hold that is due expires instead (ReservationError)."""
        with Transaction(self._db) as tx:
            self._expire(tx, now_ms, ids=(rid,))
            to = Status.REQUESTED if approval else Status.CONFIRMED
            return self._move(rid, {Status.HELD}, to, now_ms, by=by)

    def approve(self, rid: str, now_ms: int, *, by: str, note: str = "") -> Reservation:
        """``requested`` → ``confirmed`` (the owner said yes)."""
        with Transaction(self._db):
            return self._move(rid, {Status.REQUESTED}, Status.CONFIRMED, now_ms, by=by, note=note)

    def reject(self, rid: str, now_ms: int, *, by: str, note: str = "") -> Reservation:
        """``requested`` → ``rejected`` (the owner said no); its time is free again."""
        with Transaction(self._db):
            return self._move(rid, {Status.REQUESTED}, Status.REJECTED, now_ms, by=by, note=note)

    def cancel(self, rid: str, now_ms: int, by: str, note: str = "") -> Reservation:
        """``held``, ``requested`` or ``confirmed`` → ``cancelled``; its time is free again.
        One in use (``active``) or ended cannot be cancelled."""
        with Transaction(self._db):
            return self._move(
                rid, {Status.HELD, Status.REQUESTED, Status.CONFIRMED}, Status.CANCELLED,
                now_ms, by=by, note=note,
            )

    def expire_holds(self, now_ms: int) -> builtins.list[str]:
        """Every hold due by ``now_ms`` → ``expired``; their ids."""
        with Transaction(self._db) as tx:
            return self._expire(tx, now_ms)

    def settle(
        self, moves: Sequence[tuple[str, Status, Status, str]], now_ms: int
    ) -> tuple[builtins.list[str], builtins.list[tuple[Reservation, str]]]:
        """The lifecycle's writes in ONE transaction: every hold due by ``now_ms`` expires,
        then each move ``(id, from, to, note)`` (measured use: ``confirmed`` → ``active`` →
        ``completed``, or ``no_show``, ``preempted``) is recorded by ``pilotline``. A
        reservation no longer in ``from`` (cancelled since it was read) is left as it is.
        Returns the expired ids and the moved reservations with their notes."""
        moved: builtins.list[tuple[Reservation, str]] = []
        with Transaction(self._db) as tx:
            expired = self._expire(tx, now_ms)
            for rid, start, to, note in moves:
                current = self.get(rid)
                if current is None or current.status is not start:
                    continue
                res = self._move(rid, {start}, to, now_ms, by="pilotline", note=note)
                moved.append((res, note))
        return expired, moved

    def _expire(
        self,
        tx: Transaction,
        now_ms: int,
        *,
        machine: str | None = None,
        ids: Collection[str] = (),
    ) -> builtins.list[str]:
        """Inside ``tx``: holds due by ``now_ms`` (of ``machine``, or among ``ids``) expire."""
        where = "status = ? AND hold_until_ms <= ?"
        params: builtins.list[object] = [Status.HELD.value, now_ms]
        if machine is not None:
            where += " AND machine = ?"
            params.append(machine)
        if ids:
            where += f" AND id IN ({', '.join('?' * len(ids))})"
            params.extend(ids)
        due = [str(row[0]) for row in self._db.execute(
            f"SELECT id FROM reservations WHERE {where} ORDER BY id", params  # noqa: S608 # nosec B608
        )]
        for rid in due:
            self._move(
                rid, {Status.HELD}, Status.EXPIRED, now_ms, by="pilotline", note="hold ran out"
            )
        return due

    def _move(
        self,
        rid: str,
        start: Collection[Status],
        to: Status,
        now_ms: int,
        *,
        by: str,
        note: str = "",
    ) -> Reservation:
        """Inside a transaction: ``rid``'s status from one of ``start`` to ``to``, recorded."""
        res = self.get(rid)
        if res is None:
            raise ReservationError(f"no reservation {rid}")
        if res.status not in start:
            allowed = " or ".join(sorted(s.value for s in start))
            raise ReservationError(
                f"{rid} is {res.status.value}: only a {allowed} reservation can become"
                f" {to.value}"
            )
        self._db.execute(
            "UPDATE reservations SET status = ?, updated_ms = ? WHERE id = ?",
            (to.value, now_ms, rid),
        )
        self._event(rid, to, now_ms, by, note)
        return Reservation(
            id=res.id, machine=res.machine, tenant=res.tenant, start_ms=res.start_ms,
            end_ms=res.end_ms, status=to, created_ms=res.created_ms,
            predecessor=res.predecessor, purpose=res.purpose, hold_until_ms=res.hold_until_ms,
        )

    def _event(self, rid: str, status: Status, at_ms: int, by: str, note: str) -> None:
        self._db.execute(
            "INSERT INTO reservation_events (reservation, status, at_ms, by, note)"
            " VALUES (?, ?, ?, ?, ?)",
            (rid, status.value, at_ms, by, note),
        )

    # -- reads -------------------------------------------------------------------------------

    def get(self, rid: str) -> Reservation | None:
        found = self._select("id = ?", (rid,))
        return found[0] if found else None

    def list(
        self,
        *,
        machine: str | None = None,
        tenant: str | None = None,
        from_ms: int | None = None,
        to_ms: int | None = None,
        statuses: Collection[Status] | None = None,
    ) -> builtins.list[Reservation]:
        """Reservations overlapping ``[from_ms, to_ms)`` (either open), by start time."""
        where = ["1 = 1"]
        params: builtins.list[object] = []
        for column, value in (("machine", machine), ("tenant", tenant)):
            if value is not None:
                where.append(f"{column} = ?")
                params.append(value)
        if from_ms is not None:
            where.append("end_ms > ?")
            params.append(from_ms)
        if to_ms is not None:
            where.append("start_ms < ?")
            params.append(to_ms)
        if statuses is not None:
            if not statuses:
                return []
            where.append(f"status IN ({', '.join('?' * len(statuses))})")
            params.extend(s.value for s in statuses)
        return self._select(" AND ".join(where), params)

    def events(self, rid: str) -> builtins.list[tuple[Status, int, str, str]]:
        """``rid``'s status history: ``(status, at_ms, by, note)``, oldest first."""
        return [
            (Status(row[0]), int(row[1]), str(row[2]), str(row[3]))
            for row in self._db.execute(
                "SELECT status, at_ms, by, note FROM reservation_events WHERE reservation = ?"
                " ORDER BY id",
                (rid,),
            )
        ]

    def events_since(
        self, after_id: int, limit: int = 1000
    ) -> builtins.list[tuple[int, str, Status, int]]:
        """Every reservation's status moves after event ``after_id``, oldest first, at most
        ``limit``: ``(event id, reservation, status, at_ms)``. Ids only grow: a reader keeps
        the last one it handled as its cursor (booking points, booking-aware capacity)."""
        return [
            (int(row[0]), str(row[1]), Status(row[2]), int(row[3]))
            for row in self._db.execute(
                "SELECT id, reservation, status, at_ms FROM reservation_events WHERE id > ?"
                " ORDER BY id LIMIT ?",
                (after_id, limit),
            )
        ]

    def last_event_id(self) -> int:
        """The newest status move's id (0: none yet)."""
        return int(self._db.execute("SELECT COALESCE(MAX(id), 0) FROM reservation_events")
                   .fetchone()[0])

    def _select(self, where: str, params: Sequence[object]) -> builtins.list[Reservation]:
        rows = self._db.execute(
            f"SELECT {_COLUMNS} FROM reservations WHERE {where}"  # noqa: S608 (constants, values bound) # nosec B608
            " ORDER BY start_ms, id",
            params,
        ).fetchall()
        return [_reservation(row) for row in rows]
