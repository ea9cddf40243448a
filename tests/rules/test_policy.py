"""Offering policies: weekly hours in the facility's time zone, blackouts, minimum window."""

from __future__ import annotations

from datetime import datetime, time
from zoneinfo import ZoneInfo

from hypothesis import given, settings
from hypothesis import strategies as st

from pilotline.rules import (
    DEFAULT_STATE_MAP,
    Capacity,
    IdleWindowClosed,
    MachineSpec,
    MappedState,
    Plant,
    PlantSpec,
    Sample,
)
from pilotline.rules.policy import NEVER, OfferingPolicy, Span, WeeklySlot

PARIS = ZoneInfo("Europe/Paris")
WEEKDAYS = frozenset(range(5))
WEEKEND = frozenset({5, 6})
# weekdays 18:00 to 06:00 the next morning, and weekends all day
EVENINGS = OfferingPolicy(
    tz=PARIS,
    weekly=(WeeklySlot(WEEKDAYS, time(18), time(6)), WeeklySlot(WEEKEND, time(0), None)),
)


def paris(*args: int) -> int:
    return int(datetime(*args, tzinfo=PARIS).timestamp() * 1000)  # type: ignore[misc]


def test_weekday_evenings_and_weekends() -> None:
    # 2026-11-23 is a Monday
    assert not EVENINGS.span(paris(2026, 11, 23, 17, 59)).allowed
    evening = EVENINGS.span(paris(2026, 11, 23, 18, 0))
    assert evening.allowed
    assert evening.start_ms == paris(2026, 11, 23, 18)
    assert evening.end_ms == paris(2026, 11, 24, 6)
    # Friday evening runs into the weekend, which ends at midnight on Sunday
    weekend = EVENINGS.span(paris(2026, 11, 28, 12))
    assert weekend.start_ms == paris(2026, 11, 27, 18)
    assert weekend.end_ms == paris(2026, 11, 30, 0)
    assert EVENINGS.span(paris(2026, 11, 23, 12)) .end_ms == paris(2026, 11, 23, 18)


def test_daylight_saving_changes_follow_the_wall_clock() -> None:
    # A nightly 22:00-06:00 slot: 8 hours, but 9 across the night Europe/Paris leaves
    # summer time (2026-10-25, 03:00 -> 02:00) and 7 across the one it starts it
    # (2026-03-29, 02:00 -> 03:00); the edges stay at 22:00 and 06:00 local time.
    nightly = (WeeklySlot(frozenset(range(7)), time(22), time(6)),)
    policy = OfferingPolicy(tz=PARIS, weekly=nightly)

    def hours(span_at: int) -> float:
        span = policy.span(span_at)
        return ((span.end_ms or 0) - (span.start_ms or 0)) / 3_600_000

    assert hours(paris(2026, 10, 17, 23)) == 8
    assert hours(paris(2026, 10, 24, 23)) == 9
    assert hours(paris(2026, 3, 28, 23)) == 7
    autumn = policy.span(paris(2026, 10, 24, 23))
    assert autumn.start_ms == paris(2026, 10, 24, 22)
    assert autumn.end_ms == paris(2026, 10, 25, 6)


def test_blackouts_cut_the_allowed_time() -> None:
    policy = OfferingPolicy(
        tz=PARIS, blackouts=((paris(2026, 12, 24), paris(2026, 12, 27)),)
    )
    assert policy.span(paris(2026, 12, 23, 12)).end_ms == paris(2026, 12, 24)
    assert not policy.span(paris(2026, 12, 25)).allowed
    assert policy.span(paris(2026, 12, 27, 1)).start_ms == paris(2026, 12, 27)


def test_min_window_stops_offering_before_the_span_closes() -> None:
    policy = OfferingPolicy(
        tz=PARIS,
        weekly=(WeeklySlot(WEEKDAYS, time(18), time(22)),),
        min_window_ms=3_600_000,
    )
    assert policy.offers(paris(2026, 11, 23, 20, 59)).allowed
    late = policy.offers(paris(2026, 11, 23, 21, 0))
    assert not late.allowed
    assert late.end_ms == paris(2026, 11, 23, 22)


@settings(max_examples=200, deadline=None)
@given(st.integers(min_value=paris(2026, 1, 1), max_value=paris(2027, 1, 1)))
def test_spans_contain_their_instant_and_agree_at_their_edges(ts: int) -> None:
    span = EVENINGS.span(ts)
    assert span.start_ms is None or span.start_ms <= ts
    assert span.end_ms is None or ts < span.end_ms
    if span.end_ms is not None:
        assert EVENINGS.span(span.end_ms).allowed is not span.allowed
    if span.start_ms is not None:
        assert EVENINGS.span(span.start_ms).allowed is span.allowed
        assert EVENINGS.span(span.start_ms - 1).allowed is not span.allowed


def test_the_core_offers_idle_time_only_inside_the_policy() -> None:
    spec = MachineSpec(
        "laser-01", "photonics", "acme", MappedState("state", DEFAULT_STATE_MAP),
        debounce_ms=0, min_idle_ms=600_000, stale_after_ms=3_600_000,
        publish_interval_ms=86_400_000, policy=EVENINGS,
    )
    plant = Plant(PlantSpec((spec,), publish_interval_ms=86_400_000))
    start = paris(2026, 11, 23, 16)  # Monday 16:00, idle until 19:00
    for minute in range(0, 180, 5):
        plant.receive(Sample("laser-01", start + minute * 60_000, {"state": "NotExecuting"}))
    plant.receive(Sample("laser-01", paris(2026, 11, 23, 19), {"state": "Executing"}))
    caps = [e for e in plant.events() if isinstance(e, Capacity)]
    assert [(c.ts_ms, c.available, c.offered) for c in caps] == [
        (paris(2026, 11, 23, 16, 10), True, False),  # available, but outside the hours
        (paris(2026, 11, 23, 18), True, True),  # offered from 18:00 exactly
        (paris(2026, 11, 23, 19), False, False),
    ]


def test_a_window_that_never_met_the_policy_is_not_offered() -> None:
    spec = MachineSpec(
        "laser-01", "photonics", "acme", MappedState("state", DEFAULT_STATE_MAP),
        debounce_ms=0, min_idle_ms=0, policy=EVENINGS,
    )
    plant = Plant(PlantSpec((spec,)))
    start = paris(2026, 11, 23, 10)
    plant.receive(Sample("laser-01", start, {"state": "NotExecuting"}))
    plant.receive(Sample("laser-01", start + 30_000, {"state": "Executing"}))
    closed = [e for e in plant.events() if isinstance(e, IdleWindowClosed)]
    assert [c.offered for c in closed] == [False]


def test_never_offers_at_any_time_and_sees_no_edge() -> None:
    for ts in (paris(2026, 11, 23, 3), paris(2026, 11, 23, 19), paris(2026, 12, 25, 12)):
        assert NEVER.offers(ts) == Span(False, None, None)
    spec = MachineSpec(
        "laser-01", "photonics", "acme", MappedState("state", DEFAULT_STATE_MAP),
        debounce_ms=0, min_idle_ms=0, policy=NEVER,
    )
    plant = Plant(PlantSpec((spec,)))
    start = paris(2026, 11, 23, 19)  # inside EVENINGS' hours: nothing else would refuse it
    plant.receive(Sample("laser-01", start, {"state": "NotExecuting"}))
    plant.receive(Sample("laser-01", start + 30_000, {"state": "Executing"}))
    caps = [(c.available, c.offered) for c in plant.events() if isinstance(c, Capacity)]
    assert caps == [(True, False), (False, False)]
