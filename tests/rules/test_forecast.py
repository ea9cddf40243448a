"""The forecast of offered free minutes on synthetic histories."""

from __future__ import annotations

from datetime import UTC, datetime, time

from pilotline.rules.forecast import HOUR_MS, WEEK_MS, allowed_ms, forecast
from pilotline.rules.policy import ALWAYS, OfferingPolicy, WeeklySlot

NOW = int(datetime(2026, 11, 27, 12, 30, tzinfo=UTC).timestamp() * 1000)
DAY = 24 * HOUR_MS
MIDNIGHT = NOW // DAY * DAY


def evenings(days: int) -> list[tuple[int, int]]:
    """Idle every evening 20:00-22:00 for the last ``days`` days."""
    return [
        (MIDNIGHT - d * DAY + 20 * HOUR_MS, MIDNIGHT - d * DAY + 22 * HOUR_MS)
        for d in range(1, days + 1)
    ]


def by_hour(result: list) -> dict[int, float]:  # type: ignore[type-arg]
    return {(h.start_ms % DAY) // HOUR_MS: h.expected_free_min for h in result[:24]}


def test_a_regular_evening_gap_is_forecast_at_its_hours() -> None:
    result = forecast(evenings(28), ALWAYS, NOW, min_idle_ms=0, first_seen_ms=NOW - 28 * DAY)
    assert len(result) == 48
    assert result[0].start_ms == MIDNIGHT + 13 * HOUR_MS  # the next whole hour
    hours = by_hour(result)
    assert hours[20] == 60.0
    assert hours[21] == 60.0
    assert {h: v for h, v in hours.items() if h not in (20, 21)} == dict.fromkeys(
        [h for h in range(24) if h not in (20, 21)], 0.0
    )
    assert all(h.offered_min == 60.0 for h in result)


def test_min_idle_removes_the_part_that_could_not_be_booked() -> None:
    result = forecast(
        evenings(28), ALWAYS, NOW, min_idle_ms=HOUR_MS // 2, first_seen_ms=NOW - 28 * DAY
    )
    hours = by_hour(result)
    assert hours[20] == 30.0
    assert hours[21] == 60.0


def test_the_policy_bounds_what_is_offered() -> None:
    policy = OfferingPolicy(weekly=(WeeklySlot(frozenset(range(7)), time(21), time(23)),))
    result = forecast(evenings(28), policy, NOW, min_idle_ms=0, first_seen_ms=NOW - 28 * DAY)
    hours = by_hour(result)
    assert hours[20] == 0.0  # idle, but not offered at 20:00
    assert hours[21] == 60.0
    assert [h.offered_min for h in result[:24] if h.offered_min] == [60.0, 60.0]


def test_a_young_history_is_averaged_over_what_exists() -> None:
    # watched for 10 days only: weeks before that are no evidence, not zero
    result = forecast(evenings(10), ALWAYS, NOW, min_idle_ms=0, first_seen_ms=NOW - 10 * DAY)
    assert by_hour(result)[20] == 60.0
    unseen = forecast([], ALWAYS, NOW, min_idle_ms=0, first_seen_ms=None)
    assert {h.expected_free_min for h in unseen} == {0.0}


def test_allowed_ms_counts_policy_minutes() -> None:
    policy = OfferingPolicy(weekly=(WeeklySlot(frozenset(range(7)), time(10, 15), time(10, 45)),))
    start = MIDNIGHT + 10 * HOUR_MS
    assert allowed_ms(policy, start, start + HOUR_MS) == 30 * 60_000
    assert allowed_ms(ALWAYS, start, start + WEEK_MS) == WEEK_MS
