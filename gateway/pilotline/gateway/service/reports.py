"""Utilization: over any period from the store's state history, and the daily report.

Each completed day's ``utilization`` points are written once, in one transaction with the
day's record in the store's ``reports``, so a restart neither skips nor repeats a day.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Collection, Mapping
from datetime import tzinfo

import structlog

from pilotline.gateway.clock import Clock
from pilotline.gateway.config import SiteConfig
from pilotline.gateway.sinks.influx.drain import OutboxDrainer
from pilotline.gateway.sinks.influx.points import utilization_rows
from pilotline.gateway.store import Store
from pilotline.rules import State
from pilotline.rules.spec import MachineSpec
from pilotline.rules.utilization import (
    StateChange,
    Utilization,
    day_start_ms,
    next_day_ms,
    utilization,
)

log = structlog.get_logger("pilotline.gateway")

UTILIZATION_REPORT = "utilization"
"""``reports.kind`` of the daily ``utilization`` points in the store."""
UTILIZATION_BACKFILL_DAYS = 31
"""After a long stop, completed days are written back this far at most."""


class UtilizationReports:
    def __init__(
        self,
        *,
        config: SiteConfig,
        store: Store,
        machines: Collection[MachineSpec],
        zone_of: Mapping[str, str],
        lateness_ms: int,
        clock_ms: Clock,
        commit: Callable[[], None],
        drainer: OutboxDrainer | None,
    ) -> None:
        self._config = config
        self._store = store
        self._machines = machines
        self._zone_of = zone_of
        self._lateness_ms = lateness_ms
        self._clock_ms = clock_ms
        self._commit = commit
        self._drainer = drainer
        self._next_report_ms = 0

    @property
    def tz(self) -> tzinfo:
        """Days of the daily report: the site's ``timezone:`` (UTC by default)."""
        return self._config.tz

    @property
    def settle_ms(self) -> int:
        """How long after a day ended every state change of that day is known: the events
        of a day come out up to ``debounce`` (a confirmation) or ``stale_after`` (offline
        at the last sample) after it, on the watermark clock (``lateness`` behind)."""
        longest = max((max(m.debounce_ms, m.stale_after_ms) for m in self._machines), default=0)
        return self._lateness_ms + longest + 1_000

    def utilization(
        self, from_ms: int, to_ms: int, *, among: Collection[str] | None = None
    ) -> Utilization:
        """Utilization of every configured machine (or only those ``among``) and their zones
        over ``[from_ms, to_ms)``, from the embedded store's state history, up to the
        gateway's clock."""
        changes = [
            StateChange(row["machine"], row["zone"], row["ts_ms"], State(row["state"]))
            for row in self._store.state_history(from_ms, to_ms)
            if among is None or row["machine"] in among
        ]
        machines = {m: z for m, z in self._zone_of.items() if among is None or m in among}
        return utilization(changes, from_ms, to_ms, now_ms=self._clock_ms(), machines=machines)

    def report(self) -> list[int]:
        """Write the ``utilization`` points of every completed day not written yet (from the
        first recorded state, at most ``UTILIZATION_BACKFILL_DAYS`` back); returns the days
        written (their start, epoch ms)."""
        tz = self.tz
        store = self._store
        self._commit()  # the state history must include what is staged
        now = self._clock_ms()
        complete_until = day_start_ms(now - self.settle_ms, tz)
        self._next_report_ms = next_day_ms(complete_until, tz) + self.settle_ms
        day = self._first_due_day(complete_until)
        if day is None:
            return []
        written: list[int] = []
        config = self._config
        while day < complete_until:
            end = next_day_ms(day, tz)
            rows = utilization_rows(
                config.site, self.utilization(day, end), day, config.shard_tag
            )
            store.commit_report(
                UTILIZATION_REPORT,
                day,
                lines=rows,
                outbox=self._drainer is not None,
                now_ms=now,
            )
            written.append(day)
            day = end
        if written and self._drainer is not None:
            self._drainer.notify()
            log.info("utilization.reported", days=len(written), last_day_ms=written[-1])
        return written

    def needed_from_ms(self) -> int | None:
        """Where the state history must still begin for the reports: the start of the first
        day not written yet (None: no reports are written here, or no history yet). Pruning
        keeps the state each machine was in at that time and everything after."""
        if self._drainer is None:
            return None
        return self._first_due_day(day_start_ms(self._clock_ms() - self.settle_ms, self.tz))

    def _first_due_day(self, complete_until: int) -> int | None:
        """The first day ``report`` writes, given the days complete ``until``; None if the
        store has no state history yet."""
        tz = self.tz
        last = self._store.last_report(UTILIZATION_REPORT)
        if last is not None:
            day = next_day_ms(last, tz)
        else:
            first = self._store.first_state_ms()
            if first is None:
                return None
            day = day_start_ms(first, tz)
        oldest = day_start_ms(complete_until - UTILIZATION_BACKFILL_DAYS * 86_400_000, tz)
        return max(day, oldest)

    async def run(self) -> None:
        """Write each completed day's points once (see ``report``). Wakes once a second,
        like the rules timer, and does work only when a day is due."""
        while True:
            if self._clock_ms() >= self._next_report_ms:
                self.report()
            await asyncio.sleep(1.0)
