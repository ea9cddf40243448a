"""The time the tests run at: one start instant and one clock a test moves by hand."""

from __future__ import annotations

T0 = 1_795_737_600_000
"""2026-11-27T00:00:00Z in epoch ms: a whole hour, midnight UTC, and a multiple of every
publish interval the tests use."""

MONDAY_0800 = 1_767_600_000_000
"""2026-01-05 08:00 UTC (a Monday) in epoch ms: where the rules core's synthetic timelines
start; their offering slots are times of that morning."""


class Clock:
    """A wall clock and a monotonic clock that the test sets.

    ``clock()`` is the wall clock in epoch ms (what ``clock_ms`` parameters take),
    ``clock.monotonic()`` the monotonic one in ms (``monotonic_ms``), ``clock.seconds()`` the
    wall clock as ``time.time()`` gives it. Assigning ``clock.ms`` steps the wall clock alone
    (NTP, a clock set by hand); ``advance()`` moves both clocks; ``set()`` moves both to a
    wall time, with no step between them.
    """

    def __init__(self, ms: int = T0) -> None:
        self.ms = ms
        self.mono = 0

    def __call__(self) -> int:
        return self.ms

    def monotonic(self) -> int:
        return self.mono

    def seconds(self) -> float:
        return self.ms / 1000

    def advance(self, ms: int) -> None:
        self.ms += ms
        self.mono += ms

    def set(self, ms: int) -> None:
        self.mono += ms - self.ms
        self.ms = ms
