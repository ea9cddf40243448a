"""Booking notifications from the reservations' history: every ``reservation_events`` row
past the cursor (store/booking_notices.py) that is a move worth telling becomes one
notification per channel whose ``bookings:`` wants it, queued in the durable outbox with the
cursor advanced in the same transaction, then sent by the alert channels' senders.

Reading the history rather than hooking each route and the lifecycle: a move is told however
it was made (the API, the lifecycle, another process on the store), and exactly once, since
the rows and the cursor are one commit. A cancellation of a mere hold is not told (it never
was a booking), nor are holds, ``active``, ``completed`` and expired holds.

Two reminders are told at each run too, each once per reservation (the reservation and kind
marked told in the notification rows' transaction, store ``booking_reminders``):

- ``starting_soon``: a ``confirmed`` booking starts within ``alerts.booking_starting_soon``
  (one confirmed closer to its start than that is told at once; one whose start has passed is
  not). To its tenant's channels: not to a channel with only ``bookings.owners``;
- ``overrun``: a used booking (``active`` or ``completed``) whose machine is ``running`` now,
  without a break since before the booking's end, more than ``alerts.booking_overrun`` past
  that end: the run metering counts as the booking's overrun (rules/booking/metering.py), even
  into the next booking's time (which the lifecycle then finds preempted). To its owner's and
  its tenant's channels. Bookings that ended more than ``OVERRUN_LOOKBACK_MS`` ago are not
  looked at.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Callable, Iterable, Sequence
from typing import Final

import structlog

from pilotline.gateway.clock import Clock
from pilotline.gateway.config import SiteConfig
from pilotline.gateway.notify.booking import EVENTS, booking_payload
from pilotline.gateway.notify.payload import dumps
from pilotline.gateway.notify.sender import NotificationSender
from pilotline.gateway.store import Store
from pilotline.gateway.store.booking_notices import BookingEvent
from pilotline.rules.booking import Reservation, Status
from pilotline.rules.plant import MachineView
from pilotline.rules.states import State

log = structlog.get_logger("pilotline.gateway.bookings")

NOTICES_INTERVAL_S: Final = 2.0
"""How often the history is read: a notification is queued this long after its move at most."""
BATCH: Final = 500
OVERRUN_LOOKBACK_MS: Final = 86_400_000
"""A booking that ended longer ago than this is not told ``overrun`` any more."""
_USED: Final = frozenset({Status.ACTIVE, Status.COMPLETED})


class BookingNotifier:
    def __init__(
        self,
        *,
        config: SiteConfig,
        store: Store,
        senders: Sequence[NotificationSender],
        clock_ms: Clock,
        views: Callable[[], Iterable[MachineView]] = list,
        interval_s: float = NOTICES_INTERVAL_S,
    ) -> None:
        """``views``: the machines' confirmed states now (the plant's view), for overruns."""
        self._site = config.site
        self._config = config
        self._store = store
        self._clock_ms = clock_ms
        self._interval_s = interval_s
        self._routes = [(c.name, c.bookings) for c in config.alerts.channels() if c.bookings]
        self._senders = {s.name: s for s in senders}
        self._where = {m.id: (z.id, m.owner) for z, m in config.machines()}
        self._views = views
        self._lead_ms = config.alerts.booking_starting_soon
        self._overrun_ms = config.alerts.booking_overrun

    def run_once(self) -> int:
        """Queue the notifications of every event past the cursor, then the reminders due;
        returns how many rows."""
        queued = self._moves()
        if self._routes:
            now = self._clock_ms()
            queued += self._remind("starting_soon", self._starting_soon(now), now)
            queued += self._remind("overrun", self._overrun(now), now)
        return queued

    def _moves(self) -> int:
        notices = self._store.booking_notices
        queued = 0
        while True:
            after = notices.position()
            events = notices.pending(after, BATCH)
            if not events:
                return queued
            rows = [row for e in events for row in self._rows(e)]
            if not notices.queue(rows, after=after, upto=events[-1].id, now_ms=self._clock_ms()):
                return queued  # moved by someone else: read again at the next run
            queued += len(rows)
            self._wake(rows)
            if len(events) < BATCH:
                return queued

    def _wake(self, rows: Sequence[tuple[str, str]]) -> None:
        for channel in {name for name, _ in rows}:
            sender = self._senders.get(channel)
            if sender is not None:
                sender.notify()

    def _starting_soon(self, now: int) -> list[tuple[Reservation, str]]:
        book = self._store.reservations()
        soon = book.list(from_ms=now, to_ms=now + self._lead_ms + 1,
                         statuses=(Status.CONFIRMED,))
        return [(r, "") for r in soon if now < r.start_ms <= now + self._lead_ms]

    def _overrun(self, now: int) -> list[tuple[Reservation, str]]:
        running = {
            v.id: v.since_ms for v in self._views()
            if v.state is State.RUNNING and v.since_ms is not None
        }
        if not running:
            return []
        book = self._store.reservations()
        out = []
        ended = book.list(from_ms=now - OVERRUN_LOOKBACK_MS, to_ms=now, statuses=_USED)
        for res in ended:
            since = running.get(res.machine)
            past = now - res.end_ms
            if since is None or since > res.end_ms or past <= self._overrun_ms:
                continue
            out.append((res, f"running {past // 60_000} min past the end"))
        return out

    def _remind(self, kind: str, due: Sequence[tuple[Reservation, str]], now: int) -> int:
        notices = self._store.booking_notices
        told = notices.reminded(kind, [r.id for r, _ in due])
        queued = 0
        for res, note in due:
            if res.id in told:
                continue
            zone, owner = self._where.get(res.machine, ("", ""))
            rows = [
                (name, dumps(booking_payload(
                    self._site, name, event=kind, event_id=None, at_ms=now, by="pilotline",
                    note=note, late=None, res=res, zone=zone, owner=owner,
                )))
                for name, route in self._routes
                if route.wants(owner, res.tenant, kind)
            ]
            if notices.remind(kind, res.id, rows, now_ms=now):
                queued += len(rows)
                self._wake(rows)
                log.info("booking.reminded", kind=kind, reservation=res.id,
                         machine=res.machine, tenant=res.tenant, channels=len(rows))
        return queued

    def _rows(self, e: BookingEvent) -> list[tuple[str, str]]:
        event = EVENTS.get(e.status)
        if event is None or (e.status is Status.CANCELLED and e.previous is Status.HELD):
            return []
        res = e.reservation
        zone, owner = self._where.get(res.machine, ("", ""))
        late = None
        if e.status is Status.CANCELLED and res.machine in self._where:
            threshold = self._config.booking_rules(res.machine).late_cancel_ms
            late = e.at_ms > res.start_ms - threshold
        return [
            (name, dumps(booking_payload(
                self._site, name, event=event, event_id=e.id, at_ms=e.at_ms, by=e.by,
                note=e.note, late=late, res=res, zone=zone, owner=owner,
            )))
            for name, route in self._routes
            if route.wants(owner, res.tenant, event)
        ]

    async def run(self) -> None:
        """Every ``interval_s``; a failed run (the file locked too long, a full disk) is
        logged and retried at the next: the cursor did not move."""
        while True:
            try:
                self.run_once()
            except sqlite3.Error as exc:
                log.warning("booking.notices_failed", error=str(exc))
            await asyncio.sleep(self._interval_s)
