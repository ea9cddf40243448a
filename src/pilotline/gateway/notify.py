"""Deliver alert notifications to webhooks from the durable ``notifications`` table.

Theory of operation: ``Gateway._stage_alerts`` turns each alert transition into one row per
webhook that wants its severity (``payload_json``), and ``Store.commit`` inserts those rows
in the same transaction as the transition itself: a transition is either durable with its
notifications or not at all, and a restart loses none.

One ``NotificationSender`` task per channel (``notify-<name>``) sends that channel's rows
oldest first, so a firing notification always arrives before its resolution. The POST runs in
a worker thread (stdlib ``urllib.request``), so a slow receiver never blocks the event loop,
the telemetry pipeline or another channel. A 2xx answer deletes the row; anything else
(connection refused, timeout, a non-2xx status, an unreadable ``url_file``) keeps it, counts
an attempt and schedules the next try after a full-jitter backoff (``backoff_base_s``
doubling per attempt, capped at ``backoff_cap_s``, 5 minutes), persisted in ``next_ms``.
Delivery is at least once: a POST whose answer is lost (timeout, kill) is sent again.

Bodies: ``format: json`` sends the payload (rule, machine, zone, severity, firing, value,
message, ts, ts_ms, site); ``format: slack`` sends ``{"text": ...}``, which Slack and
Mattermost incoming webhooks both accept.
"""

from __future__ import annotations

import asyncio
import http.client
import json
import random
import time
import urllib.error
import urllib.request
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

import structlog

from pilotline.gateway.config import WebhookConfig
from pilotline.gateway.store import Store
from pilotline.rules.alerts import AlertTransition

log = structlog.get_logger("pilotline.gateway.notify")

BACKOFF_CAP_S = 300.0
"""Longest wait between two attempts of one notification."""


class DeliveryError(Exception):
    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.status = status


def payload(site: str, t: AlertTransition) -> dict[str, Any]:
    """What a channel is told about one transition (stored as JSON in ``notifications``)."""
    return {
        "site": site,
        "rule": t.rule,
        "machine": t.machine,
        "zone": t.zone,
        "severity": t.severity,
        "firing": t.firing,
        "value": t.value,
        "message": t.message,
        "ts": datetime.fromtimestamp(t.ts_ms / 1000, tz=UTC).isoformat(timespec="milliseconds"),
        "ts_ms": t.ts_ms,
    }


def payload_json(site: str, t: AlertTransition) -> str:
    return json.dumps(payload(site, t), separators=(",", ":"), sort_keys=True)


def slack_text(p: dict[str, Any]) -> str:
    status = "FIRING" if p["firing"] else "RESOLVED"
    return (
        f"[{status}] {p['severity']} {p['rule']} on {p['machine']} ({p['zone']}): "
        f"{p['message']} (value {p['value']:g}, {p['ts']})"
    )


def render(fmt: str, p: dict[str, Any]) -> bytes:
    """The HTTP body for a channel of format ``fmt`` (``json`` or ``slack``)."""
    body: dict[str, Any] = {"text": slack_text(p)} if fmt == "slack" else p
    return json.dumps(body, separators=(",", ":"), sort_keys=True).encode()


def post(url: str, body: bytes, timeout_s: float) -> int:
    """POST ``body`` as JSON; returns the 2xx status or raises ``DeliveryError``."""
    request = urllib.request.Request(  # noqa: S310 - the scheme is checked by the config
        url,
        data=body,
        method="POST",
        headers={"Content-Type": "application/json", "User-Agent": "pilotline"},
    )
    try:
        # Only http(s): check_webhook_url runs on the configured url and on every url_file read.
        with urllib.request.urlopen(request, timeout=timeout_s) as response:  # noqa: S310  # nosec B310
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        raise DeliveryError(f"HTTP {exc.code}", exc.code) from None
    except (urllib.error.URLError, OSError, http.client.HTTPException) as exc:
        # Never the URL itself in the message: it may carry a secret (url_file).
        reason = exc.reason if isinstance(exc, urllib.error.URLError) else exc
        raise DeliveryError(f"{type(exc).__name__}: {reason}") from None
    if not 200 <= status < 300:
        raise DeliveryError(f"HTTP {status}", status)
    return status


class NotificationSender:
    """Sends one channel's notifications; run one task per channel."""

    def __init__(
        self,
        store: Store,
        channel: WebhookConfig,
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
        self.name = channel.name
        self.counts: Counter[tuple[str, str]] = Counter() if counts is None else counts
        """(channel, "sent" | "failed") -> count; shared with the gateway's /metrics."""
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self.poll_s = poll_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()

    def notify(self) -> None:
        """New rows were committed: wake the sender if it is idle."""
        self._wake.set()

    async def run(self) -> None:
        """Send forever (cancel to stop; unsent rows stay in the store)."""
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
            body = render(self.channel.format, json.loads(stored))
            url = self.channel.resolved_url()
            status = await asyncio.to_thread(post, url, body, self.channel.timeout_s)
        except Exception as exc:  # noqa: BLE001 - a bad receiver or file must not stop the task
            return self._failed(row_id, attempts, exc)
        self._store.notification_delete(row_id)
        self.counts[(self.name, "sent")] += 1
        log.info("notify.sent", channel=self.name, status=status, attempts=attempts + 1)
        return 0.0

    def _failed(self, row_id: int, attempts: int, exc: Exception) -> float:
        self.counts[(self.name, "failed")] += 1
        ceiling = min(self.backoff_cap_s, self.backoff_base_s * 2**attempts)
        delay = self._rng.uniform(0, ceiling)
        self._store.notification_retry(
            row_id, next_ms=int(self._clock() * 1000) + round(delay * 1000)
        )
        message = exc.message if isinstance(exc, DeliveryError) else f"{type(exc).__name__}: {exc}"
        log.warning(
            "notify.failed",
            channel=self.name,
            status=exc.status if isinstance(exc, DeliveryError) else None,
            error=message,
            attempts=attempts + 1,
            retry_in_s=round(delay, 3),
        )
        return delay
