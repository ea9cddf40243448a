"""Booking notifications from the reservations' history: every ``reservation_events`` row
past the cursor (store/booking_notices.py) that is a move worth telling becomes one
notification per channel whose ``bookings:`` wants it, queued in the durable outbox with the
cursor advanced in the same transaction, then sent by the alert channels' senders.

Reading the history rather than hooking each route and the lifecycle: a move is told however
it was made (the API, the lifecycle, another process on the store), and exactly once, since
the rows and the cursor are one commit. A cancellation of a mere hold is not told (it never
was a booking), nor are holds, ``active``, ``completed`` and expired holds.
"""

from __future__ import annotations

import asyncio
import sqlite3
from collections.abc import Sequence
from typing import Final

import structlog

from pilotline.gateway.clock import Clock
from pilotline.gateway.config import SiteConfig
from pilotline.gateway.notify.booking import EVENTS, booking_payload
from pilotline.gateway.notify.payload import dumps
from pilotline.gateway.notify.sender import NotificationSender
from pilotline.gateway.store import Store
from pilotline.gateway.store.booking_notices import BookingEvent
from pilotline.rules.booking import Status

log = structlog.get_logger("pilotline.gateway.bookings")

NOTICES_INTERVAL_S: Final = 2.0
"""How often the history is read: a notification is queued this long after its move at most."""
BATCH: Final = 500


class BookingNotifier:
    def __init__(
        self,
        *,
        config: SiteConfig,
        store: Store,
        senders: Sequence[NotificationSender],
        clock_ms: Clock,
        interval_s: float = NOTICES_INTERVAL_S,
    ) -> None:
        self._site = config.site
        self._config = config
        self._store = store
        self._clock_ms = clock_ms
        self._interval_s = interval_s
        self._routes = [(c.name, c.bookings) for c in config.alerts.channels() if c.bookings]
        self._senders = {s.name: s for s in senders}
        self._where = {m.id: (z.id, m.owner) for z, m in config.machines()}

    def run_once(self) -> int:
        """Queue the notifications of every event past the cursor; returns how many rows."""
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
            for channel in {name for name, _ in rows}:
                sender = self._senders.get(channel)
                if sender is not None:
                    sender.notify()
            if len(events) < BATCH:
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
