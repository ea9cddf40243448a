"""The time the rules core runs on: the wall clock, made safe against steps.

Staleness and debounce are durations, and the core measures them on source times advanced by
the gateway's clock (``handle_timer``). A wall clock that *steps* (an NTP correction, a
wrongly set RTC, a resumed VM) would make every machine look silent for an hour at once, or
stop staleness for an hour. ``SteadyClock`` follows the wall clock while it moves with the
monotonic clock (within ``tolerance_ms``, so slews are followed); when it steps, time goes on
at the monotonic rate from where it was, and the step is logged and counted. The sources then
decide: the first accepted sample whose source time agrees with the new wall clock better than
with the steady time re-anchors to the wall clock (the step was a correction); samples that
agree with the steady time keep it (the step was the gateway's mistake).
"""

from __future__ import annotations

import time
from collections.abc import Callable

import structlog

from pilotline.collectors.clock import wall_clock_ms

log = structlog.get_logger("pilotline.gateway.clock")

Clock = Callable[[], int]

__all__ = ["Clock", "SteadyClock", "monotonic_ms", "wall_clock_ms"]


def monotonic_ms() -> int:
    return time.monotonic_ns() // 1_000_000


class SteadyClock:
    def __init__(
        self, wall: Clock, monotonic: Clock | None = monotonic_ms, tolerance_ms: int = 5_000
    ) -> None:
        """``monotonic=None``: follow ``wall`` as it is (tests that move a clock by hand)."""
        self._wall = wall
        self._mono = monotonic
        self.tolerance_ms = tolerance_ms
        self._offset = 0 if monotonic is None else wall() - monotonic()
        self.stepped = False  # the wall clock is away from the steady time
        self.steps = 0
        self.resyncs = 0

    def now(self) -> int:
        wall = self._wall()
        if self._mono is None:
            return wall
        mono = self._mono()
        steady = mono + self._offset
        if abs(wall - steady) <= self.tolerance_ms:
            self._offset = wall - mono
            self.stepped = False
            return wall
        if not self.stepped:
            self.stepped = True
            self.steps += 1
            log.warning(
                "clock.stepped",
                step_s=round((wall - steady) / 1000, 3),
                note="the rules keep the steady time until source times confirm the wall clock",
            )
        return steady

    def future_limit_base(self) -> int:
        """What "the future" is measured from: the later of the wall and the steady time, so
        that neither a step back nor a correction forward refuses good samples."""
        return max(self._wall(), self.now())

    def observe(self, ts_ms: int) -> None:
        """An accepted sample's source time: after a step, re-anchor if it sides with the wall."""
        if not self.stepped or self._mono is None:
            return
        wall = self._wall()
        mono = self._mono()
        if abs(ts_ms - wall) < abs(ts_ms - (mono + self._offset)):
            log.warning("clock.resynced", step_s=round((wall - mono - self._offset) / 1000, 3))
            self._offset = wall - mono
            self.stepped = False
            self.resyncs += 1
