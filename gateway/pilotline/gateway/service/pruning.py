"""The store's retention (``store_retention:``), applied once an hour.

Cutoffs by the gateway's wall clock: ``history_days`` for the state history, closed idle
windows, acknowledgements and the record of written reports; ``quarantine_days`` and
``dead_letter_days`` for theirs. The state history's cutoff is moved back further to the
first day whose ``utilization`` points are not written yet (reports.py), so a report never
reads a history pruned under it. What the store keeps whatever the cutoff is in
store/retention.py.

Rows go in batches of ``batch`` per transaction with the event loop free in between: the
first run on a store that never pruned (years of history) holds up a commit by one batch at
most, never by the whole backlog.
"""

from __future__ import annotations

import asyncio
import sqlite3
import time
from collections.abc import Callable
from typing import Final

import structlog

from pilotline.gateway.clock import Clock
from pilotline.gateway.config.retention import StoreRetention
from pilotline.gateway.store import Store
from pilotline.gateway.store.retention import PrunedTable

log = structlog.get_logger("pilotline.gateway.store")

DAY_MS: Final = 86_400_000
PRUNE_INTERVAL_S: Final = 3600.0
PRUNE_FIRST_S: Final = 60.0
"""The first run waits this long after the start: resuming and the broker's backlog first."""
PRUNE_BATCH: Final = 500
"""Rows per transaction: a few milliseconds of work."""


class Pruner:
    def __init__(
        self,
        *,
        retention: StoreRetention,
        store: Store,
        clock_ms: Clock,
        needed_from: Callable[[], int | None],
        batch: int = PRUNE_BATCH,
    ) -> None:
        """``needed_from``: where the state history must still begin (reports.py), or None."""
        self._retention = retention
        self._store = store
        self._clock_ms = clock_ms
        self._needed_from = needed_from
        self._batch = batch

    def cutoffs(self) -> dict[PrunedTable, int]:
        """Per table, the time before which its rows may go (tables kept forever: absent)."""
        now = self._clock_ms()
        keep = self._retention
        out: dict[PrunedTable, int] = {}
        if keep.history_days is not None:
            history = now - keep.history_days * DAY_MS
            needed = self._needed_from()
            out["state_history"] = history if needed is None else min(history, needed)
            out["idle_windows"] = history
            out["alert_acks"] = history
            out["reports"] = history
        if keep.quarantine_days is not None:
            out["quarantine"] = now - keep.quarantine_days * DAY_MS
        if keep.dead_letter_days is not None:
            out["dead_letter"] = now - keep.dead_letter_days * DAY_MS
        return out

    async def prune(self) -> dict[PrunedTable, int]:
        """Delete every row past its table's cutoff, a batch at a time; returns how many
        rows went from each table (tables with none left out)."""
        started = time.monotonic()
        pruned: dict[PrunedTable, int] = {}
        for table, cutoff in self.cutoffs().items():
            while True:
                gone = self._store.retention.prune(table, cutoff, self._batch)
                if gone:
                    pruned[table] = pruned.get(table, 0) + gone
                if gone < self._batch:
                    break
                await asyncio.sleep(0)  # the commits and the collectors go first
        if pruned:
            took_ms = round((time.monotonic() - started) * 1000)
            log.info("store.pruned", rows=pruned, took_ms=took_ms)
        return pruned

    async def run(self) -> None:
        """Prune a minute after the start, then every hour. A failed run (the file locked by
        another process longer than the busy timeout, a full disk) is logged and retried at
        the next; the gateway carries on."""
        await asyncio.sleep(PRUNE_FIRST_S)
        while True:
            try:
                await self.prune()
            except sqlite3.Error as exc:
                log.warning("store.prune_failed", error=str(exc))
            await asyncio.sleep(PRUNE_INTERVAL_S)
