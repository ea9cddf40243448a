"""The rules core on synthetic timelines: exact event lists, no peer, no clock."""

from __future__ import annotations

import itertools
from dataclasses import replace
from datetime import UTC, datetime, time, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotline.rules import (
    DEFAULT_STATE_MAP,
    Capacity,
    Event,
    IdleWindowClosed,
    IdleWindowOpened,
    MachineSpec,
    MappedState,
    Plant,
    PlantSpec,
    Quality,
    RulesConfigError,
    Sample,
    SampleRejected,
    State,
    StateChanged,
    ThresholdState,
    ZoneCapacity,
)
from pilotline.rules.policy import OfferingPolicy, WeeklySlot

T0_DT = datetime(2026, 1, 5, 8, 0, tzinfo=UTC)
HOUR = 3_600_000


def at(seconds: float) -> int:
    """Epoch ms of T0 + seconds (timelines are written in seconds from T0)."""
    return int((T0_DT + timedelta(seconds=seconds)).timestamp() * 1000)


T0 = at(0)


def mapped(mid: str = "laser-01", **kw: Any) -> MachineSpec:
    params: dict[str, Any] = {
        "debounce_ms": 20_000,
        "stale_after_ms": 60_000,
        "min_idle_ms": 120_000,
        "publish_interval_ms": HOUR,
    }
    params.update(kw)
    return MachineSpec(
        id=mid,
        zone="photonics",
        owner="acme",
        state=MappedState("state", DEFAULT_STATE_MAP),
        capabilities=("laser-cutting",),
        **params,
    )


def power(mid: str = "cam-02", **kw: int) -> MachineSpec:
    params: dict[str, int] = {
        "debounce_ms": 20_000,
        "stale_after_ms": 60_000,
        "min_idle_ms": 120_000,
        "publish_interval_ms": HOUR,
    }
    params.update(kw)
    return MachineSpec(
        id=mid,
        zone="imaging",
        owner="lumen",
        state=ThresholdState("power_w", running_above=120, idle_below=60),
        capabilities=("optical-inspection",),
        **params,
    )


def plant(*machines: MachineSpec, publish_interval_ms: int = HOUR) -> Plant:
    return Plant(PlantSpec(machines=machines, publish_interval_ms=publish_interval_ms))


def feed(p: Plant, machine: str, timeline: list[tuple[float, object]], signal: str) -> None:
    for seconds, value in timeline:
        p.receive(Sample(machine, at(seconds), {signal: value}))  # type: ignore[dict-item]


def of(events: list[Event], kind: type) -> list[Event]:
    return [e for e in events if isinstance(e, kind)]


def every(
    seconds_from: int, seconds_to: int, value: object, step: int = 5
) -> list[tuple[float, object]]:
    return [(s, value) for s in range(seconds_from, seconds_to, step)]


def test_state_counts_after_debounce_and_starts_at_first_sample() -> None:
    p = plant(mapped())
    feed(p, "laser-01", every(0, 15, "NotExecuting"), "state")
    assert of(p.events(), StateChanged) == []
    feed(p, "laser-01", every(15, 30, "NotExecuting"), "state")
    assert p.events()[:2] == [
        StateChanged("laser-01", "photonics", "acme", State.IDLE, State.OFFLINE, at(0)),
        IdleWindowOpened("laser-01", "photonics", at(0)),
    ]


def test_blip_shorter_than_debounce_does_not_split_the_window() -> None:
    p = plant(mapped())
    timeline = [*every(0, 100, "NotExecuting"), (100, "Executing"), (105, "Executing")]
    timeline += every(110, 300, "NotExecuting")
    timeline += every(300, 400, "Executing")
    feed(p, "laser-01", timeline, "state")
    p.handle_timer(at(400))
    events = p.events()
    assert of(events, IdleWindowClosed) == [
        IdleWindowClosed("laser-01", "photonics", at(0), at(300), offered=True)
    ]
    assert [(e.state, e.ts_ms) for e in of(events, StateChanged)] == [  # type: ignore[attr-defined]
        (State.IDLE, at(0)),
        (State.RUNNING, at(300)),
    ]


def test_paused_packml_job_counts_as_running() -> None:
    p = plant(mapped(debounce_ms=0))
    feed(p, "laser-01", [(0, "Execute"), (10, "Held"), (20, "Suspended"), (30, "Execute")], "state")
    changes = of(p.events(), StateChanged)
    assert [e.state for e in changes] == [State.RUNNING]  # type: ignore[attr-defined]


def test_threshold_hysteresis_holds_between_thresholds() -> None:
    p = plant(power(debounce_ms=0))
    feed(p, "cam-02", [(0, 200.0), (5, 100.0), (10, 70.0), (15, 59.9), (20, 100.0), (25, 120.0)],
         "power_w")
    changes = of(p.events(), StateChanged)
    assert [(e.state, e.ts_ms) for e in changes] == [  # type: ignore[attr-defined]
        (State.RUNNING, at(0)),
        (State.IDLE, at(15)),
        (State.RUNNING, at(25)),
    ]


def test_in_between_value_at_start_says_nothing() -> None:
    p = plant(power(debounce_ms=0))
    feed(p, "cam-02", [(0, 90.0), (5, 95.0)], "power_w")
    assert of(p.events(), StateChanged) == []
    feed(p, "cam-02", [(10, 10.0)], "power_w")
    assert [e.state for e in of(p.events(), StateChanged)] == [State.IDLE]  # type: ignore[attr-defined]


def test_stale_machine_goes_offline_and_window_ends_at_last_idle_sample() -> None:
    p = plant(mapped(min_idle_ms=0))
    feed(p, "laser-01", every(0, 200, "NotExecuting"), "state")  # last sample at 195
    p.handle_timer(at(195 + 59))
    assert of(p.events(), StateChanged)[-1].state is State.IDLE  # type: ignore[attr-defined]
    p.handle_timer(at(195 + 60))
    events = p.events()
    assert of(events, IdleWindowClosed) == [
        IdleWindowClosed("laser-01", "photonics", at(0), at(195), offered=True)
    ]
    assert of(events, StateChanged) == [
        StateChanged("laser-01", "photonics", "acme", State.OFFLINE, State.IDLE, at(195))
    ]
    assert p.next_deadline() == at(3600)  # only the periodic report is left


def test_heartbeat_keeps_a_still_value_current_for_a_source_that_reports_changes() -> None:
    p = plant(mapped(report_on_change=True))
    feed(p, "laser-01", [(0, "NotExecuting"), (30, "NotExecuting")], "state")
    for s in range(50, 500, 50):
        p.receive(Sample("laser-01", at(s), {}))
    p.handle_timer(at(500))
    assert State.OFFLINE not in [
        e.state for e in of(p.events(), StateChanged)  # type: ignore[attr-defined]
    ]


def test_heartbeats_of_a_sampling_source_do_not_keep_its_state_alive() -> None:
    """A payload without the state signal proves a link, not a state: a machine whose data
    stopped goes offline at its last real sample however many empty payloads follow."""
    p = plant(mapped(min_idle_ms=0, debounce_ms=0))
    feed(p, "laser-01", [(0, "NotExecuting"), (30, "NotExecuting")], "state")
    for s in range(31, 500):
        p.receive(Sample("laser-01", at(s), {}))
    events = p.events()
    assert [(e.state, e.ts_ms) for e in of(events, StateChanged)] == [  # type: ignore[attr-defined]
        (State.IDLE, at(0)),
        (State.OFFLINE, at(30)),
    ]
    assert not p.view()[0].available


def test_capacity_becomes_available_after_min_idle_and_ends_with_the_window() -> None:
    p = plant(mapped(min_idle_ms=120_000))
    feed(p, "laser-01", every(0, 300, "NotExecuting") + every(300, 340, "Executing"), "state")
    p.handle_timer(at(340))
    caps = of(p.events(), Capacity)
    assert caps == [
        Capacity("laser-01", "photonics", "acme", at(120), True, 120.0, True),
        # the first running sample ends it, before the debounce confirms the change: idle
        # time is sold only while every sample seen still shows it idle
        Capacity("laser-01", "photonics", "acme", at(300), False, 300.0, False),
    ]


def test_short_idle_gap_is_never_offered() -> None:
    p = plant(mapped(min_idle_ms=120_000))
    feed(p, "laser-01", every(0, 60, "NotExecuting") + every(60, 200, "Executing"), "state")
    p.handle_timer(at(200))
    events = p.events()
    assert of(events, Capacity) == []
    assert of(events, IdleWindowClosed) == [
        IdleWindowClosed("laser-01", "photonics", at(0), at(60), offered=False)
    ]


def test_periodic_reports_capacity_and_zone_counts() -> None:
    p = plant(mapped(publish_interval_ms=60_000), power(publish_interval_ms=60_000),
              publish_interval_ms=60_000)
    p.handle_timer(at(0))
    for s in range(0, 60, 5):
        p.receive(Sample("laser-01", at(s), {"state": "Executing"}))
        p.receive(Sample("cam-02", at(s), {"power_w": 10.0}))
    p.handle_timer(at(60))
    events = [e for e in p.events() if isinstance(e, Capacity | ZoneCapacity) and e.ts_ms == at(60)]
    assert events == [
        Capacity("laser-01", "photonics", "acme", at(60), False, 0.0, False, periodic=True),
        Capacity("cam-02", "imaging", "lumen", at(60), False, 60.0, False, periodic=True),
        ZoneCapacity("imaging", "all", at(60), 1, 0, 0, 0, 0),
        ZoneCapacity("imaging", "optical-inspection", at(60), 1, 0, 0, 0, 0),
        ZoneCapacity("photonics", "all", at(60), 1, 0, 1, 0, 0),
        ZoneCapacity("photonics", "laser-cutting", at(60), 1, 0, 1, 0, 0),
    ]


def test_bad_input_becomes_events_not_exceptions() -> None:
    p = plant(mapped(), power())
    p.receive(Sample("ghost", at(0), {"state": "Executing"}))
    p.receive(Sample("laser-01", at(1), {"state": "Dancing"}))
    p.receive(Sample("cam-02", at(2), {"power_w": "lots"}))
    p.receive(Sample("cam-02", at(5), {"power_w": 10.0}))
    p.receive(Sample("cam-02", at(3), {"power_w": 10.0}))
    assert [e.reason for e in of(p.events(), SampleRejected)] == [  # type: ignore[attr-defined]
        "unknown_machine",
        "unmapped_state",
        "wrong_type",
        "out_of_order",
    ]


def test_bad_quality_never_drives_a_state_and_ends_in_offline() -> None:
    p = plant(mapped(debounce_ms=0))
    feed(p, "laser-01", [(0, "NotExecuting")], "state")
    for s in range(5, 200, 5):
        p.receive(Sample("laser-01", at(s), {"state": "Executing"}, Quality.BAD))
    p.handle_timer(at(200))
    assert [e.state for e in of(p.events(), StateChanged)] == [  # type: ignore[attr-defined]
        State.IDLE,
        State.OFFLINE,
    ]


def test_opcua_enumeration_integers_map_through_their_text() -> None:
    spec = MachineSpec(
        "coater", "photonics", "acme",
        MappedState("state", {"1": State.RUNNING, "2": State.IDLE}), debounce_ms=0,
    )
    p = plant(spec)
    p.receive(Sample("coater", at(0), {"state": 2.0}))
    assert [e.state for e in of(p.events(), StateChanged)] == [State.IDLE]  # type: ignore[attr-defined]


@pytest.mark.parametrize(
    ("spec", "problem"),
    [
        (MachineSpec("m", "z", "o", ThresholdState("p", 10, 20)), "idle_below"),
        (MachineSpec("m", "z", "o", MappedState("s", {})), "empty"),
        (MachineSpec("m", "z", "o", MappedState("s", DEFAULT_STATE_MAP), stale_after_ms=0),
         "stale_after_ms"),
    ],
)
def test_bad_rules_raise_one_clear_error_at_construction(spec: MachineSpec, problem: str) -> None:
    with pytest.raises(RulesConfigError, match=problem):
        plant(spec)


# -- chunking invariance ------------------------------------------------------------------

STATES = ["Executing", "NotExecuting", "OutOfService", "Resetting"]

timeline_strategy = st.lists(
    st.tuples(
        st.sampled_from(["laser-01", "cam-02"]),
        st.integers(min_value=0, max_value=90),  # gap in seconds (can exceed stale_after)
        st.integers(min_value=0, max_value=3),  # state index, or power level
    ),
    min_size=1,
    max_size=120,
)


def _samples(steps: list[tuple[str, int, int]]) -> list[Sample]:
    t = T0
    out = []
    for machine, gap, level in steps:
        t += gap * 1000
        if machine == "laser-01":
            out.append(Sample(machine, t, {"state": STATES[level]}))
        else:
            out.append(Sample(machine, t, {"power_w": [10.0, 80.0, 150.0, 400.0][level]}))
    return out


# Offering hours with edges inside the generated timelines (which start at 08:00 UTC), so the
# chunking property also covers policy deadlines and the minimum window.
SHORT_SLOTS = OfferingPolicy(
    weekly=(
        WeeklySlot(frozenset(range(7)), time(8, 20), time(8, 50)),
        WeeklySlot(frozenset(range(7)), time(9, 10), time(10, 0)),
    ),
    min_window_ms=300_000,
)


def _spec() -> tuple[MachineSpec, ...]:
    return (
        mapped(min_idle_ms=60_000, publish_interval_ms=300_000),
        replace(
            power(min_idle_ms=30_000, debounce_ms=10_000, publish_interval_ms=120_000),
            policy=SHORT_SLOTS,
        ),
    )


def run_whole(samples: list[Sample], end: int) -> list[Event]:
    p = Plant(PlantSpec(_spec(), publish_interval_ms=300_000))
    p.receive_many(samples)
    p.handle_timer(end)
    return p.events()


def run_ticking(samples: list[Sample], end: int, tick_ms: int) -> list[Event]:
    """Timer ticks at a fixed period, interleaved with samples, drained in small batches."""
    p = Plant(PlantSpec(_spec(), publish_interval_ms=300_000))
    out: list[Event] = []
    now = samples[0].ts_ms
    for sample in samples:
        while now + tick_ms <= sample.ts_ms:
            now += tick_ms
            p.handle_timer(now)
            out += p.events()
        p.receive(sample)
        out += p.events()
    p.handle_timer(end)
    return out + p.events()


def run_at_deadlines(samples: list[Sample], end: int) -> list[Event]:
    """The live shell's way: arm one timer for next_deadline() before each sample."""
    p = Plant(PlantSpec(_spec(), publish_interval_ms=300_000))
    out: list[Event] = []
    for sample in samples:
        deadline = p.next_deadline()
        while deadline is not None and deadline <= sample.ts_ms:
            p.handle_timer(deadline)
            out += p.events()
            deadline = p.next_deadline()
        p.receive(sample)
    deadline = p.next_deadline()
    while deadline is not None and deadline <= end:
        p.handle_timer(deadline)
        deadline = p.next_deadline()
    p.handle_timer(end)
    return out + p.events()


@settings(max_examples=150, deadline=None)
@given(timeline_strategy, st.sampled_from([1_000, 7_000, 60_000]))
def test_same_samples_in_any_chunking_give_the_same_events(
    steps: list[tuple[str, int, int]], tick_ms: int
) -> None:
    samples = _samples(steps)
    end = samples[-1].ts_ms + 600_000
    whole = run_whole(samples, end)
    assert run_ticking(samples, end, tick_ms) == whole
    assert run_at_deadlines(samples, end) == whole


@settings(max_examples=100, deadline=None)
@given(timeline_strategy)
def test_windows_are_well_formed(steps: list[tuple[str, int, int]]) -> None:
    samples = _samples(steps)
    events = run_whole(samples, samples[-1].ts_ms + 600_000)
    for machine in ("laser-01", "cam-02"):
        opened = [e for e in of(events, IdleWindowOpened) if e.machine == machine]  # type: ignore[attr-defined]
        closed = [e for e in of(events, IdleWindowClosed) if e.machine == machine]  # type: ignore[attr-defined]
        # every machine ends offline after 10 silent minutes, so every window is closed
        assert [e.start_ms for e in opened] == [e.start_ms for e in closed]  # type: ignore[attr-defined]
        ends = [(e.start_ms, e.end_ms) for e in closed]  # type: ignore[attr-defined]
        assert all(s <= e for s, e in ends)
        assert all(prev_end <= start for (_, prev_end), (start, _) in itertools.pairwise(ends))
        states = [e for e in of(events, StateChanged) if e.machine == machine]  # type: ignore[attr-defined]
        assert all(a.state is not b.state for a, b in itertools.pairwise(states))
        assert not states or states[-1].state is State.OFFLINE
