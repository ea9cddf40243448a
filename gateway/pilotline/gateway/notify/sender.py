"""The generic sender: one task per channel drains that channel's rows of the durable
``notifications`` table, whatever the channel's kind.

Theory of operation. The gateway inserts a row per (notification, channel) in the same
transaction as the alert state behind it (``Store.commit``), so a restart loses none. A
``NotificationSender`` sends its channel's rows oldest first, one at a time, so a firing
notification always arrives before its resolution. The channel's ``deliver(payload)`` does the
protocol (HTTP POST, SMTP, MQTT publish) in a worker thread, so a slow receiver never blocks
the event loop, the telemetry pipeline or another channel. ``deliver`` returning deletes the
row; raising keeps it, counts an attempt (persisted) and schedules the next try (``next_ms``):

- a transient failure (connection refused, timeout, HTTP 5xx/408/429, SMTP 4xx, a broker that
  did not acknowledge, an unreadable ``url_file``) waits a full-jitter backoff:
  ``uniform(0, min(cap, base * 2**attempts))``, cap 5 minutes;
- a permanent refusal (``DeliveryError(permanent=True)``: HTTP 3xx/4xx other than 408/429,
  SMTP 5xx such as a wrong password or a refused recipient, a broker refusing the credentials)
  is **kept and retried at the cap** (between cap/2 and cap), and logged ``notify.rejected``
  once per row (then ``notify.failed`` at each later attempt). Decided so because such a
  refusal is almost always the operator's to fix (a revoked hook, a changed password, a
  moved URL) and is fixed without a restart (``url_file`` and ``password_file`` are read at
  each attempt): dropping the row would lose an alert, dead-lettering it would need a second
  path to replay. The cost: later notifications of that channel wait behind the refused one
  (order is kept), which ``notify.rejected`` and the ``failed`` counter make visible; other
  channels are not delayed.

Delivery is at least once: an attempt whose outcome is lost (timeout after the receiver
accepted, a kill between delivery and delete) is sent again.
"""

from __future__ import annotations

import asyncio
import json
import random
import time
from collections import Counter
from collections.abc import Callable
from typing import Any

import structlog

from pilotline.collectors.backoff import full_jitter
from pilotline.gateway.notify.channel import Channel, DeliveryError
from pilotline.gateway.notify.payload import upgrade
from pilotline.gateway.store import Store

log = structlog.get_logger("pilotline.gateway.notify")

BACKOFF_CAP_S = 300.0
"""Longest wait between two attempts of one notification."""


class NotificationSender:
    """Sends one channel's notifications; run one task per channel (``notify-<name>``)."""

    def __init__(
        self,
        store: Store,
        channel: Channel,
        *,
        counts: Counter[tuple[str, str]] | None = None,
        backoff_base_s: float = 1.0,
        backoff_cap_s: float = BACKOFF_CAP_S,
        poll_s: float = 5.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        self._store = store
        self.channel = channel
        self.name = self.channel.name
        self.counts: Counter[tuple[str, str]] = Counter() if counts is None else counts
        """(channel, "sent" | "failed") -> count; shared with the gateway's /metrics."""
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.poll_s = poll_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._rejected_row: int | None = None  # the row notify.rejected was logged for

    def notify(self) -> None:
        """New rows were committed: wake the sender if it is idle."""
        self._wake.set()

    async def run(self) -> None:
        """Send forever (cancel to stop; unsent rows stay in the store)."""
        try:
            while True:
                self._wake.clear()
                delay = await self._step()
                if delay is None:
                    try:
                        async with asyncio.timeout(self.poll_s):
                            await self._wake.wait()
                    except TimeoutError:
                        pass
                elif delay > 0:
                    # Backing off: the head row goes first, so new rows wait with it.
                    await asyncio.sleep(delay)
        finally:
            self.channel.close()

    async def _step(self) -> float | None:
        """One attempt: None if nothing waits, else seconds until the next attempt."""
        row = self._store.notification_next(self.name)
        if row is None:
            return None
        row_id, stored, attempts, next_ms = row
        now_ms = int(self._clock() * 1000)
        if next_ms > now_ms:
            return (next_ms - now_ms) / 1000
        try:
            payload = _decode(self.name, stored)
            await asyncio.to_thread(self.channel.deliver, payload)
        except Exception as exc:  # noqa: BLE001 - a bad receiver or file must not stop the task
            return self._failed(row_id, attempts, exc)
        self._store.notification_delete(row_id)
        self.counts[(self.name, "sent")] += 1
        log.info(
            "notify.sent",
            channel=self.name,
            channel_kind=self.channel.kind,
            notification=payload.get("kind"),
            alerts=len(payload.get("alerts", ())),
            attempts=attempts + 1,
        )
        return 0.0

    def _failed(self, row_id: int, attempts: int, exc: Exception) -> float:
        self.counts[(self.name, "failed")] += 1
        permanent = isinstance(exc, DeliveryError) and exc.permanent
        if permanent:
            delay = self._rng.uniform(self.backoff_cap_s / 2, self.backoff_cap_s)
        else:
            delay = full_jitter(attempts, self.backoff_base_s, self.backoff_cap_s, self._rng)
        self._store.notification_retry(
            row_id, next_ms=int(self._clock() * 1000) + round(delay * 1000)
        )
        fields: dict[str, Any] = {
            "channel": self.name,
            "channel_kind": self.channel.kind,
            "status": exc.status if isinstance(exc, DeliveryError) else None,
            "error": _describe(exc),
            "attempts": attempts + 1,
            "retry_in_s": round(delay, 3),
        }
        if permanent and self._rejected_row != row_id:
            self._rejected_row = row_id
            log.error(
                "notify.rejected",
                **fields,
                hint="the receiver refuses this notification; it is kept and retried every "
                "few minutes, and this channel's later notifications wait behind it",
            )
        else:
            log.warning("notify.failed", **fields)
        return delay


def _decode(channel: str, stored: str) -> dict[str, Any]:
    try:
        payload = upgrade(channel, json.loads(stored))
    except (ValueError, KeyError, TypeError) as exc:
        raise DeliveryError(f"unreadable row: {_describe(exc)}", permanent=True) from None
    if not isinstance(payload, dict):
        raise DeliveryError("unreadable row: not a JSON object", permanent=True)
    return payload


def _describe(exc: Exception) -> str:
    return exc.message if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
