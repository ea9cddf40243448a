"""Restart resumption and odd inputs in the pure core: checkpoint, restore, and the defined
outcome of duplicate, out-of-order and late samples. No peer, no clock."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st
from test_rules import _samples, _spec, at, mapped, of, plant, timeline_strategy

from pilotline.rules import (
    Event,
    IdleWindowClosed,
    IdleWindowOpened,
    Plant,
    PlantSpec,
    Sample,
    SampleLate,
    SampleRejected,
    State,
    StateChanged,
)

EDGES = (StateChanged, IdleWindowOpened, IdleWindowClosed)


def edges(events: list[Event]) -> list[Event]:
    """State and window events: what a restart must neither repeat nor lose; per machine, in
    order (each machine keeps its own clock, so the interleaving across machines may
    differ)."""
    return sorted((e for e in events if isinstance(e, EDGES)), key=lambda e: e.machine)


def restarted(p: Plant) -> Plant:
    """A new plant resumed from every checkpoint of ``p`` (as the gateway does at start-up)."""
    fresh = Plant(p._spec)
    for view in p.view():
        cp = p.checkpoint(view.id)
        assert cp is not None
        assert fresh.restore(cp)
    return fresh


def idle_laser(seconds: range) -> list[Sample]:
    return [Sample("laser-01", at(s), {"state": "NotExecuting"}) for s in seconds]


@settings(max_examples=150, deadline=None)
@given(timeline_strategy, st.data())
def test_a_restart_anywhere_gives_the_same_states_and_windows(
    steps: list[tuple[str, int, int]], data: st.DataObject
) -> None:
    """Killed after any sample and resumed from the checkpoint: the same state changes and
    idle windows as the run that was never interrupted; none doubled, none lost."""
    samples = _samples(steps)
    end = samples[-1].ts_ms + 600_000
    split = data.draw(st.integers(min_value=0, max_value=len(samples)))
    whole = Plant(PlantSpec(_spec(), publish_interval_ms=300_000))
    whole.receive_many(samples)
    whole.handle_timer(end)
    whole.handle_timer(end + 600_000)

    before = Plant(PlantSpec(_spec(), publish_interval_ms=300_000))
    before.receive_many(samples[:split])
    out = before.events()
    after = restarted(before)
    after.receive_many(samples[split:])
    after.handle_timer(end)
    # a machine silent across the restart is judged on the clock resumed then
    after.handle_timer(end + 600_000)
    assert edges(out + after.events()) == edges(whole.events())


def test_a_machine_still_idle_after_a_restart_keeps_its_one_window() -> None:
    p = plant(mapped(debounce_ms=0, min_idle_ms=10_000))
    p.receive_many(idle_laser(range(0, 30, 5)))
    assert [e.ts_ms for e in of(p.events(), StateChanged)] == [at(0)]  # type: ignore[attr-defined]
    q = restarted(p)
    q.receive_many(idle_laser(range(30, 60, 5)))
    events = q.events()
    assert not of(events, StateChanged)
    assert not of(events, IdleWindowOpened)
    assert q.view()[0].window_start_ms == at(0)
    assert q.view()[0].available  # min_idle counted from the original start
    q.handle_timer(at(200))  # silent: stale 60 s after the last sample
    closed = of(q.events(), IdleWindowClosed)
    assert [(e.start_ms, e.end_ms) for e in closed] == [(at(0), at(55))]  # type: ignore[attr-defined]


def test_a_machine_silent_across_the_restart_goes_offline_at_its_last_sample() -> None:
    p = plant(mapped(debounce_ms=0, min_idle_ms=10_000))
    p.receive_many(idle_laser(range(0, 30, 5)))
    p.events()
    q = restarted(p)
    q.handle_timer(at(3_600))  # the gateway comes back an hour later
    assert q.events() == []  # its broker backlog may still come: nothing decided yet
    view = q.view()[0]
    assert view.state is State.IDLE
    assert not view.available
    q.handle_timer(at(3_600 + 60))  # nothing came for stale_after
    events = q.events()
    assert [(e.state, e.ts_ms) for e in of(events, StateChanged)] == [  # type: ignore[attr-defined]
        (State.OFFLINE, at(25))
    ]
    assert [(e.start_ms, e.end_ms) for e in of(events, IdleWindowClosed)] == [  # type: ignore[attr-defined]
        (at(0), at(25))
    ]
    assert q.view()[0].window_start_ms is None  # no dangling open window


def test_a_pending_change_survives_the_restart_and_starts_at_its_first_sample() -> None:
    p = plant(mapped(debounce_ms=20_000))
    p.receive_many(idle_laser(range(0, 60, 5)))
    p.receive(Sample("laser-01", at(60), {"state": "Executing"}))  # pending, not confirmed
    p.events()
    q = restarted(p)
    q.receive_many(
        Sample("laser-01", at(s), {"state": "Executing"}) for s in range(65, 90, 5)
    )
    changes = of(q.events(), StateChanged)
    assert [(e.state, e.ts_ms) for e in changes] == [(State.RUNNING, at(60))]  # type: ignore[attr-defined]


def test_restore_of_an_unconfigured_machine_is_ignored() -> None:
    p = plant(mapped(debounce_ms=0))
    p.receive(Sample("laser-01", at(0), {"state": "NotExecuting"}))
    cp = p.checkpoint("laser-01")
    assert cp is not None
    other = plant(mapped("laser-02", debounce_ms=0))
    assert other.restore(cp) is False
    assert other.checkpoint("laser-01") is None


def test_a_duplicate_sample_creates_no_event() -> None:
    """An MQTT redelivery: the same machine, time and values again changes nothing."""
    p = plant(mapped(debounce_ms=0, min_idle_ms=0))
    first = Sample("laser-01", at(0), {"state": "NotExecuting"})
    p.receive(first)
    assert of(p.events(), StateChanged)
    for _ in range(3):
        p.receive(first)
    assert p.events() == []


def test_an_out_of_order_sample_is_rejected_and_changes_nothing() -> None:
    p = plant(mapped(debounce_ms=0))
    p.receive_many(idle_laser(range(0, 30, 5)))
    p.events()
    p.receive(Sample("laser-01", at(10), {"state": "Executing"}))
    events = p.events()
    assert [(type(e), e.reason) for e in events] == [(SampleRejected, "out_of_order")]  # type: ignore[attr-defined]
    assert p.view()[0].state is State.IDLE


def test_a_late_sample_of_another_machine_applies_at_its_own_time() -> None:
    """Within one machine order is required; across machines each keeps its own clock, so a
    sample older than the gateway's clock applies at its own time when its machine decided
    nothing since."""
    p = plant(mapped(debounce_ms=0), mapped("laser-02", debounce_ms=0))
    p.receive(Sample("laser-01", at(100), {"state": "NotExecuting"}))
    p.receive(Sample("laser-02", at(90), {"state": "NotExecuting"}))
    changes = [e for e in of(p.events(), StateChanged) if e.machine == "laser-02"]  # type: ignore[attr-defined]
    assert [e.ts_ms for e in changes] == [at(90)]  # type: ignore[attr-defined]


def test_a_sample_older_than_its_machines_last_decision_applies_at_that_decision() -> None:
    """What was decided is never rewritten: the offline decided at 25 + 60 s stays, and a
    late sample before that decision is applied at it and reported."""
    p = plant(mapped(debounce_ms=0, min_idle_ms=0))
    p.receive_many(idle_laser(range(0, 30, 5)))
    p.handle_timer(at(200))  # offline at 25, decided at 85
    p.events()
    p.receive(Sample("laser-01", at(50), {"state": "Executing"}), at(200))
    events = p.events()
    assert [(e.ts_ms, e.applied_ms) for e in of(events, SampleLate)] == [(at(50), at(85))]  # type: ignore[attr-defined]
    assert [(e.state, e.ts_ms) for e in of(events, StateChanged)] == [(State.RUNNING, at(85))]  # type: ignore[attr-defined]
