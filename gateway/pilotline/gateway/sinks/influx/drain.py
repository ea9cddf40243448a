"""Drain the store's outbox into InfluxDB, in order, at least once.

Theory of operation: ``run()`` takes the oldest lines (up to ``batch_size``), writes them
from a worker thread and deletes them from the outbox only once the write returned. Lines
therefore leave the gateway in commit order and are never lost; a write whose answer is
lost (timeout, kill) is sent again, which InfluxDB (and victoria-metrics with dedup)
absorbs because a point is identified by its series and timestamp: at least once on the
wire, exactly once in the store.

- A retryable failure (server down, 5xx, 429, auth) keeps the batch and retries the same
  lines after a full-jitter backoff (``backoff_base_s`` doubling, capped at
  ``backoff_cap_s``).
- A non-retryable failure (the data is refused: 400, 413, 422) splits the batch in halves
  until the refused line is alone; that line moves to the store's ``dead_letter`` table
  and everything around it is written. One bad line costs about 2*log2(batch) requests
  instead of the batch.
- An empty outbox waits on an ``asyncio.Event`` the gateway sets with ``notify()`` after
  each commit, or ``flush_interval_s``, whichever comes first. The check is the store's
  in-memory depth counter, so an idle gateway runs no SQL.

``flush(timeout_s)`` drains until empty or the timeout (SIGTERM). A lock makes ``flush``
and ``run`` take turns, so a batch is never in flight twice from the same process.
"""

from __future__ import annotations

import asyncio
import random
import time
from collections.abc import Callable
from dataclasses import dataclass

import structlog

from pilotline.collectors.backoff import full_jitter
from pilotline.gateway.sinks.influx.writer import InfluxWriter, WriteError
from pilotline.gateway.store import Store

log = structlog.get_logger("pilotline.gateway.drain")

UNHEALTHY_AFTER = 3
"""Consecutive failed writes after which the sink reports itself unhealthy."""


@dataclass(frozen=True, slots=True)
class DrainStats:
    written: int
    """Points acknowledged by the store since start."""
    batches: int
    """Successful writes."""
    retries: int
    """Retryable failures (each followed by a retry of the same batch)."""
    errors: int
    """All failed writes, retryable or not."""
    dead_lettered: int
    """Lines moved to ``dead_letter`` because the store refused them."""
    last_error: str | None
    last_success_ms: int | None
    consecutive_failures: int
    healthy: bool
    """``consecutive_failures <= UNHEALTHY_AFTER``."""
    depth: int
    """Lines waiting in the outbox."""


class OutboxDrainer:
    def __init__(
        self,
        store: Store,
        writer: InfluxWriter,
        *,
        batch_size: int = 5000,
        flush_interval_s: float = 1.0,
        linger_s: float = 0.05,
        backoff_base_s: float = 0.5,
        backoff_cap_s: float = 30.0,
        clock: Callable[[], float] = time.time,
        rng: random.Random | None = None,
    ) -> None:
        if batch_size < 1:
            raise ValueError("batch_size must be at least 1")
        self._store = store
        self._writer = writer
        self.batch_size = batch_size
        self.flush_interval_s = flush_interval_s
        self.linger_s = linger_s
        self.backoff_base_s = backoff_base_s
        self.backoff_cap_s = backoff_cap_s
        self._clock = clock
        self._rng = rng or random.Random()
        self._wake = asyncio.Event()
        self._lock = asyncio.Lock()
        # Bisection state: while a refused batch is being narrowed down, batches are at most
        # ``_limit`` lines, until the drain passes the refused batch's last id.
        self._limit = batch_size
        self._suspect_upto: int | None = None
        self._written = 0
        self._batches = 0
        self._retries = 0
        self._errors = 0
        self._dead_lettered = 0
        self._last_error: str | None = None
        self._last_success_ms: int | None = None
        self._failures = 0
        self._failing_since: float | None = None

    def notify(self) -> None:
        """New lines were committed: wake the drain if it is idle. Cheap; call freely."""
        self._wake.set()

    async def run(self) -> None:
        """Drain forever (cancel the task to stop; unacknowledged lines stay in the outbox)."""
        while True:
            self._wake.clear()
            depth = self._store.outbox_depth()
            if 0 < depth < self.batch_size and self.linger_s > 0:
                # Let a trickle of commits gather into one request: each HTTP write costs
                # far more than a point, and every commit notifies us.
                await asyncio.sleep(self.linger_s)
            delay = await self._step()
            if delay is None:
                try:
                    async with asyncio.timeout(self.flush_interval_s):
                        await self._wake.wait()
                except TimeoutError:
                    pass
            elif delay > 0:
                await asyncio.sleep(delay)

    async def flush(self, timeout_s: float) -> bool:
        """Drain until the outbox is empty (True) or ``timeout_s`` passed (False)."""
        try:
            async with asyncio.timeout(timeout_s):
                while (delay := await self._step()) is not None:
                    if delay > 0:
                        await asyncio.sleep(delay)
        except TimeoutError:
            pass
        return self._store.outbox_depth() == 0

    def stats(self) -> DrainStats:
        return DrainStats(
            written=self._written,
            batches=self._batches,
            retries=self._retries,
            errors=self._errors,
            dead_lettered=self._dead_lettered,
            last_error=self._last_error,
            last_success_ms=self._last_success_ms,
            consecutive_failures=self._failures,
            healthy=self._failures <= UNHEALTHY_AFTER,
            depth=self._store.outbox_depth(),
        )

    async def _step(self) -> float | None:
        """One write attempt: None if the outbox is empty, else the delay before the next."""
        async with self._lock:
            if self._store.outbox_depth() <= 0:
                return None
            last_id, lines = self._store.outbox_lines(self._limit)
            if not lines:
                return None
            try:
                await asyncio.to_thread(self._writer.write, lines)
            except WriteError as exc:
                return self._failed(exc, last_id, len(lines))
            except Exception as exc:  # noqa: BLE001 - a writer bug must not stop the drain
                error = WriteError(f"{type(exc).__name__}: {exc}", retryable=True)
                return self._failed(error, last_id, len(lines))
            self._store.outbox_delete(last_id)
            self._succeeded(last_id, len(lines))
            return 0.0

    def _succeeded(self, last_id: int, count: int) -> None:
        self._written += count
        self._batches += 1
        self._last_success_ms = int(self._clock() * 1000)
        self._passed(last_id)
        if self._failures:
            down_for = self._clock() - (self._failing_since or self._clock())
            log.info(
                "influx.recovered",
                failures=self._failures,
                down_for_s=round(down_for, 3),
                depth=self._store.outbox_depth(),
            )
        self._failures = 0
        self._failing_since = None

    def _passed(self, last_id: int) -> None:
        if self._suspect_upto is not None and last_id >= self._suspect_upto:
            self._suspect_upto = None
            self._limit = self.batch_size

    def _failed(self, exc: WriteError, last_id: int, count: int) -> float:
        self._errors += 1
        self._last_error = exc.message
        if exc.retryable:
            self._retries += 1
            self._failures += 1
            if self._failing_since is None:
                self._failing_since = self._clock()
            delay = full_jitter(
                self._failures - 1, self.backoff_base_s, self.backoff_cap_s, self._rng
            )
            log.warning(
                "influx.write_failed",
                status=exc.status,
                error=exc.message,
                retry_in_s=round(delay, 3),
                depth=self._store.outbox_depth(),
                failures=self._failures,
            )
            return delay
        if count > 1:
            # Refused data: narrow the batch down to the refused line(s).
            self._suspect_upto = max(self._suspect_upto or 0, last_id)
            self._limit = max(1, count // 2)
            log.warning(
                "influx.batch_refused",
                status=exc.status,
                error=exc.message,
                lines=count,
                split_to=self._limit,
            )
            return 0.0
        moved = self._store.outbox_dead_letter(
            last_id, now_ms=int(self._clock() * 1000), status=exc.status, error=exc.message
        )
        self._dead_lettered += moved
        self._passed(last_id)
        log.error(
            "influx.dead_lettered",
            status=exc.status,
            error=exc.message,
            lines=moved,
            total=self._dead_lettered,
        )
        return 0.0
