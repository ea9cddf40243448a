"""The one backoff formula: bounds, growth, the cap, and no overflow after days of retries."""

from __future__ import annotations

import random

from hypothesis import given
from hypothesis import strategies as st

from pilotline.collectors.backoff import equal_jitter, full_jitter, step


def test_the_step_doubles_up_to_the_cap() -> None:
    assert [step(a, 1.0, 30.0) for a in range(7)] == [1, 2, 4, 8, 16, 30, 30]
    assert step(-3, 0.5, 30.0) == 0.5


@given(attempt=st.integers(0, 10**6), base=st.floats(0.01, 10), cap=st.floats(0.01, 600))
def test_delays_stay_within_their_bounds(attempt: int, base: float, cap: float) -> None:
    rng = random.Random(attempt)
    ceiling = step(attempt, base, cap)
    assert ceiling <= cap
    assert 0.0 <= full_jitter(attempt, base, cap, rng) <= ceiling
    assert ceiling / 2 <= equal_jitter(attempt, base, cap, rng) <= ceiling


def test_full_jitter_spreads_over_the_whole_step() -> None:
    rng = random.Random(7)
    delays = [full_jitter(10, 1.0, 300.0, rng) for _ in range(2_000)]
    assert min(delays) < 30.0
    assert max(delays) > 270.0
