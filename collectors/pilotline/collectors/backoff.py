"""Jittered exponential backoff: the one formula behind every retry loop in pilotline.

Two flavours (the names of the AWS Architecture Blog's "Exponential Backoff And Jitter"):

- ``full_jitter``: ``uniform(0, min(cap, base * 2**attempt))``. For work queued in a store
  (the outbox drainer, alert notifications): many retries spread evenly, the least load on a
  peer that is coming back.
- ``equal_jitter``: ``min(cap, base * 2**attempt) * uniform(0.5, 1)``. For reconnects
  (MQTT, OPC UA): never sooner than half the step, so a flapping peer is not hammered, yet
  gateways restarted together do not reconnect in lockstep.

The exponent is clamped before the power: ``2.0**attempt`` overflows a float after about
1,000 attempts (days of retries at the cap), which would crash the retrying task.

Shared by the collectors and the gateway, so it lives beside them, outside the pure core.
"""

from __future__ import annotations

import random
from typing import Final

_MAX_EXPONENT: Final = 32


def step(attempt: int, base_s: float, cap_s: float) -> float:
    """The un-jittered delay of retry number ``attempt`` (0 for the first retry)."""
    return min(cap_s, base_s * 2.0 ** min(max(attempt, 0), _MAX_EXPONENT))


def full_jitter(
    attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    return (rng or random).uniform(0.0, step(attempt, base_s, cap_s))


def equal_jitter(
    attempt: int, base_s: float, cap_s: float, rng: random.Random | None = None
) -> float:
    return step(attempt, base_s, cap_s) * (rng or random).uniform(0.5, 1.0)
