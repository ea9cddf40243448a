"""The wall clock in epoch milliseconds: written once, for the collectors and the gateway.

Collectors stamp arrivals with it (a payload without its own time); the gateway's clocks
(``pilotline.gateway.clock``) start from it. It lives here because collectors may not import
the gateway.
"""

from __future__ import annotations

import time


def wall_clock_ms() -> int:
    """The wall clock in epoch milliseconds."""
    return time.time_ns() // 1_000_000
