"""Capacity that is never false, and time that belongs to each machine (issues 14 and 19).

- Idle time is available only while every sample seen so far shows it idle: a pending
  change holds availability back, a window shorter than ``min_idle`` is never offered.
- A sample's stamp moves its own machine only: nothing one source sends changes another
  machine's events.
- A late sample newer than its machine's last decision applies at its own time: a backlog
  flushed after the fact gives the states and windows a replay of the same samples gives.
"""

from __future__ import annotations

import itertools
from dataclasses import replace

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rules import _samples, _spec, at, mapped, of, power, run_whole, timeline_strategy

from pilotline.rules import (
    Capacity,
    Event,
    IdleWindowClosed,
    IdleWindowOpened,
    Plant,
    PlantSpec,
    Sample,
    State,
    StateChanged,
    ZoneCapacity,
)

SELLS = ("available", "offered")


def laser_states(p: Plant, timeline: list[tuple[float, str]], now: int | None = None) -> None:
    for seconds, value in timeline:
        sample = Sample("laser-01", at(seconds), {"state": value})
        if now is None:
            p.receive(sample)  # history: the stamp is the gateway's time
        else:
            p.receive(sample, now)


def steps(start: float, end: float, value: str, step: float = 0.5) -> list[tuple[float, str]]:
    n = round((end - start) / step)
    return [(start + i * step, value) for i in range(n)]


# -- 1. no phantom availability at the end of a short window ------------------------------


def test_a_window_ending_while_min_idle_falls_is_never_available_nor_offered() -> None:
    """Idle from 40 s to 43.5 s, running again from 43.5 s; debounce 2 s, min_idle 5 s. At
    45 s the running candidate is still pending: the window ended before min_idle and was
    never available (the issue's reproduction; offered at 45 s before the fix)."""
    p = Plant(PlantSpec((mapped(debounce_ms=2_000, min_idle_ms=5_000),)))
    laser_states(p, steps(0, 40, "Executing") + steps(40, 43.5, "NotExecuting"))
    laser_states(p, steps(43.5, 60, "Executing"))
    p.handle_timer(at(60))
    events = p.events()
    assert [e for e in of(events, Capacity) if e.available] == []  # type: ignore[attr-defined]
    closed = of(events, IdleWindowClosed)
    assert [(e.start_ms, e.end_ms, e.offered) for e in closed] == [  # type: ignore[attr-defined]
        (at(40), at(43.5), False)
    ]


def test_a_blip_that_is_dropped_makes_the_window_available_then() -> None:
    """The same, but the running candidate is one sample (a blip): availability starts at the
    first idle sample after it, once the window has lasted min_idle."""
    p = Plant(PlantSpec((mapped(debounce_ms=2_000, min_idle_ms=5_000),)))
    laser_states(p, steps(0, 40, "Executing") + steps(40, 43.5, "NotExecuting"))
    laser_states(p, [(43.5, "Executing"), *steps(44, 50, "NotExecuting")])
    events = p.events()
    caps = [(e.ts_ms, e.available) for e in of(events, Capacity)]  # type: ignore[attr-defined]
    assert caps == [(at(45), True)]
    assert not of(events, IdleWindowClosed)  # the blip did not split the window


def test_availability_ends_at_the_first_sample_of_a_pending_change() -> None:
    p = Plant(PlantSpec((mapped(debounce_ms=2_000, min_idle_ms=5_000),)))
    laser_states(p, steps(0, 20, "NotExecuting") + steps(20, 30, "Executing"))
    caps = [(e.ts_ms, e.available) for e in of(p.events(), Capacity)]  # type: ignore[attr-defined]
    assert caps == [(at(5), True), (at(20), False)]


def _intervals(events: list[Event], machine: str, flag: str) -> list[tuple[int, int]]:
    """Where ``Capacity.<flag>`` was 1, from its change events (periodic ones restate)."""
    out: list[tuple[int, int]] = []
    start: int | None = None
    for e in of(events, Capacity):
        if e.machine != machine or e.periodic:  # type: ignore[attr-defined]
            continue
        on = getattr(e, flag)
        if on and start is None:
            start = e.ts_ms  # type: ignore[attr-defined]
        elif not on and start is not None:
            out.append((start, e.ts_ms))  # type: ignore[attr-defined]
            start = None
    assert start is None, "every machine ends offline, so nothing is left available"
    return out


def _states(events: list[Event], machine: str) -> list[tuple[int, int, State]]:
    """The confirmed states after the fact, as ``(start, end, state)``."""
    changes = [e for e in of(events, StateChanged) if e.machine == machine]  # type: ignore[attr-defined]
    return [
        (a.ts_ms, b.ts_ms, a.state)  # type: ignore[attr-defined]
        for a, b in itertools.pairwise(changes)
    ]


@settings(max_examples=200, deadline=None)
@given(timeline_strategy)
def test_capacity_never_overlaps_time_the_samples_show_as_not_idle(
    steps_: list[tuple[str, int, int]],
) -> None:
    """Judged after the fact, with the debounce applied: no available or offered interval
    overlaps running, down or maintenance time; it overlaps the silence before an `offline`
    by less than stale_after (silence is sold for no longer than the configured tolerance);
    and every offered window lasted at least min_idle."""
    samples = _samples(steps_)
    events = run_whole(samples, samples[-1].ts_ms + 600_000)
    for spec in _spec():
        states = _states(events, spec.id)
        for flag in SELLS:
            for start, end in _intervals(events, spec.id, flag):
                for s_start, s_end, state in states:
                    overlap = min(end, s_end) - max(start, s_start)
                    if overlap <= 0 or state is State.IDLE:
                        continue
                    assert state is State.OFFLINE, (flag, start, end, state, s_start)
                    assert overlap <= spec.stale_after_ms
        for w in of(events, IdleWindowClosed):
            if w.machine == spec.id and w.offered:  # type: ignore[attr-defined]
                assert w.end_ms - w.start_ms >= spec.min_idle_ms  # type: ignore[attr-defined]


# -- 2. time belongs to each machine -------------------------------------------------------


def _own(events: list[Event], machine: str) -> list[Event]:
    return [e for e in events if not isinstance(e, ZoneCapacity) and e.machine == machine]


def test_a_stamp_far_in_the_future_moves_no_other_machine() -> None:
    """The issue's attack on the core: one sample of cam-02 stamped 120 s ahead. The laser,
    reporting every second, stays idle and offered; no machine goes offline."""
    p = Plant(PlantSpec((mapped(debounce_ms=0, min_idle_ms=0), power(debounce_ms=0))))
    for s in range(10):
        p.receive(Sample("laser-01", at(s), {"state": "NotExecuting"}), at(s))
    p.receive(Sample("cam-02", at(130), {"power_w": 5.0}), at(10))
    p.handle_timer(at(12))
    assert not [e for e in of(p.events(), StateChanged) if e.state is State.OFFLINE]  # type: ignore[attr-defined]
    laser = p.view()[0]
    assert laser.state is State.IDLE
    assert laser.available


stamps = st.integers(min_value=-3_600, max_value=3_600)  # seconds from T0, either way


@settings(max_examples=150, deadline=None)
@given(
    timeline_strategy,
    st.lists(st.tuples(st.integers(min_value=0, max_value=200), stamps, st.integers(0, 3))),
)
def test_samples_of_one_machine_at_any_stamps_never_change_another_machines_events(
    steps_: list[tuple[str, int, int]], intruders: list[tuple[int, int, int]]
) -> None:
    """laser-01's timeline arrives live (the gateway's clock at each sample's stamp); cam-02's
    samples, at any stamps (far future, far past, out of order), arrive anywhere in between.
    laser-01's events are the same as without them."""
    laser = [s for s in _samples(steps_) if s.machine == "laser-01"]
    if not laser:
        return
    end = laser[-1].ts_ms + 600_000

    def run(with_intruders: bool) -> list[Event]:
        p = Plant(PlantSpec(_spec(), publish_interval_ms=300_000))
        inserts = sorted(intruders) if with_intruders else []
        out: list[Event] = []
        now = laser[0].ts_ms
        for i, sample in enumerate(laser):
            now = max(now, sample.ts_ms)
            for position, stamp, level in inserts:
                if position == i:
                    power_w = [10.0, 80.0, 150.0, 400.0][level]
                    p.receive(Sample("cam-02", at(stamp), {"power_w": power_w}), now)
            p.receive(sample, now)
            out += p.events()
        p.handle_timer(end)
        return _own(out + p.events(), "laser-01")

    assert run(True) == run(False)


# -- 3. a backlog applies at its own time --------------------------------------------------


def _edges(events: list[Event], machine: str) -> list[tuple[object, ...]]:
    """States and windows, by their times (``offered`` is live capacity, not history: a
    backlog older than stale_after is never offered)."""
    out: list[tuple[object, ...]] = []
    for e in events:
        if isinstance(e, StateChanged) and e.machine == machine:
            out.append(("state", e.state, e.ts_ms))
        elif isinstance(e, IdleWindowOpened) and e.machine == machine:
            out.append(("opened", e.start_ms))
        elif isinstance(e, IdleWindowClosed) and e.machine == machine:
            out.append(("closed", e.start_ms, e.end_ms))
    return out


@settings(max_examples=200, deadline=None)
@given(timeline_strategy, st.data())
def test_a_late_backlog_gives_the_states_and_windows_of_a_replay(
    steps_: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    """Each machine's samples arrive in order, late by any delay that does not grow (a
    link that was down flushes its buffer and catches up), interleaved across machines by
    arrival, with timer ticks anywhere: per machine, the same states and windows as a replay
    of the same samples."""
    samples = _samples(steps_)
    end = samples[-1].ts_ms + 3_600_000
    arrivals: list[tuple[int, int, Sample]] = []
    for machine in ("laser-01", "cam-02"):
        own = [s for s in samples if s.machine == machine]
        delays = sorted(
            data.draw(st.lists(st.integers(0, 1_800_000), min_size=len(own), max_size=len(own))),
            reverse=True,
        )
        arrived = -(2**62)
        for sample, delay in zip(own, delays, strict=True):
            arrived = max(arrived, sample.ts_ms + delay)  # in order, as the broker delivers
            arrivals.append((arrived, len(arrivals), sample))
    arrivals.sort()
    ticks = data.draw(st.lists(st.integers(0, len(arrivals)), max_size=10))

    live = Plant(PlantSpec(_spec(), publish_interval_ms=300_000))
    out: list[Event] = []
    for i, (arrived, _, sample) in enumerate(arrivals):
        if i in ticks:
            live.handle_timer(arrived)
        live.receive(sample, arrived)
        out += live.events()
    live.handle_timer(end)
    out += live.events()

    replay = run_whole(samples, end)
    for machine in ("laser-01", "cam-02"):
        assert _edges(out, machine) == _edges(replay, machine)


def test_a_backlog_of_a_machine_never_seen_plays_in_its_own_time() -> None:
    """The gateway runs; an edge device then flushes 8 minutes of 1 Hz history at once: its
    states and windows are those of the history, and none of it is offered now."""
    spec = replace(mapped(debounce_ms=5_000, min_idle_ms=60_000), stale_after_ms=30_000)
    p = Plant(PlantSpec((spec,)))
    p.handle_timer(at(600))
    history = steps(120, 300, "Executing", 1) + steps(300, 500, "NotExecuting", 1)
    history += steps(500, 600, "Executing", 1)
    laser_states(p, history, at(600))
    events = p.events()
    assert [(e.state, e.ts_ms) for e in of(events, StateChanged)] == [  # type: ignore[attr-defined]
        (State.RUNNING, at(120)),
        (State.IDLE, at(300)),
        (State.RUNNING, at(500)),
    ]
    assert [(e.start_ms, e.end_ms) for e in of(events, IdleWindowClosed)] == [  # type: ignore[attr-defined]
        (at(300), at(500))
    ]
    assert not [e for e in of(events, Capacity) if e.offered]  # type: ignore[attr-defined]


def test_a_backlog_older_than_stale_after_is_not_offered_now() -> None:
    """Silence is never sold: idle history flushed late is idle, but its newest data is
    older than stale_after by the gateway's clock."""
    spec = replace(mapped(debounce_ms=0, min_idle_ms=10_000), stale_after_ms=30_000)
    p = Plant(PlantSpec((spec,)))
    laser_states(p, steps(0, 100, "NotExecuting", 1), at(200))  # newest data 101 s old
    view = p.view()[0]
    assert view.state is State.IDLE
    assert not view.available
    assert view.lag_ms == 101_000
    laser_states(p, steps(100, 200, "NotExecuting", 1), at(200))  # the rest: 1 s old
    view = p.view()[0]
    assert view.available
    assert view.lag_ms == 1_000
    assert view.window_start_ms == at(0)
