"""Alert rules on synthetic timelines: the plant and the alert core together, no clock."""

from __future__ import annotations

from dataclasses import replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotline.rules import (
    DEFAULT_STATE_MAP,
    MachineSpec,
    MappedState,
    Plant,
    PlantSpec,
    RulesConfigError,
    Sample,
    State,
)
from pilotline.rules.alerts import (
    AlertRule,
    Alerts,
    AlertTransition,
    CapacityCondition,
    OfflineCondition,
    SignalCondition,
    StateCondition,
    Status,
    render,
    validate_template,
)

T0 = 1_767_600_000_000  # 2026-01-05 08:00 UTC
HOUR = 3_600_000


def at(seconds: float) -> int:
    return T0 + int(seconds * 1000)


def laser(mid: str = "laser-01", zone: str = "photonics", **kw: int) -> MachineSpec:
    params: dict[str, int] = {
        "debounce_ms": 10_000,
        "stale_after_ms": 60_000,
        "min_idle_ms": 120_000,
        "publish_interval_ms": HOUR,
    }
    params.update(kw)
    return MachineSpec(
        id=mid,
        zone=zone,
        owner="acme",
        state=MappedState("state", DEFAULT_STATE_MAP),
        **params,
    )


DOWN = AlertRule(
    "machine-down",
    "critical",
    "{machine} in {zone} is {state} for {value:.0f} s",
    StateCondition(State.DOWN, for_ms=120_000),
)
HOT = AlertRule(
    "chiller-hot",
    "warning",
    "{machine}: chiller at {value:.1f} °C",
    SignalCondition("chiller_c", above=25.0, clear=23.0, for_ms=30_000),
)
OFFLINE = AlertRule("offline", "warning", "{machine} offline", OfflineCondition(for_ms=120_000))
FREE = AlertRule(
    "capacity", "info", "{machine} free for {value:.0f} s", CapacityCondition(idle_for_ms=300_000)
)


class Rig:
    """The shell's wiring in miniature: the plant first, then the alert core."""

    def __init__(self, rules: list[AlertRule], *machines: MachineSpec) -> None:
        specs = machines or (laser(),)
        self.plant = Plant(PlantSpec(specs, publish_interval_ms=HOUR))
        self.alerts = Alerts(rules, specs)
        self.out: list[AlertTransition] = []

    def sample(self, seconds: float, machine: str = "laser-01", **values: float | str) -> None:
        sample = Sample(machine, at(seconds), values)
        self.plant.receive(sample)
        self.alerts.observe(self.plant.events())
        self.alerts.receive(sample)
        self.out += self.alerts.transitions()

    def every(self, start: int, end: int, step: int = 5, **values: float | str) -> None:
        for s in range(start, end, step):
            self.sample(s, **values)

    def timer(self, seconds: float) -> None:
        self.plant.handle_timer(at(seconds))
        self.alerts.observe(self.plant.events())
        self.alerts.handle_timer(at(seconds))
        self.out += self.alerts.transitions()

    def summary(self) -> list[tuple[str, bool, float]]:
        return [(t.rule, t.firing, (t.ts_ms - T0) / 1000) for t in self.out]


def test_state_rule_fires_after_for_and_resolves_once() -> None:
    rig = Rig([DOWN])
    rig.every(0, 100, state="Executing")
    rig.every(100, 400, state="Stopped")  # down decided at 110 (debounce 10 s)
    rig.every(400, 500, state="Executing")
    assert rig.summary() == [("machine-down", True, 230.0), ("machine-down", False, 410.0)]
    fired, resolved = rig.out
    assert fired.message == "laser-01 in photonics is down for 120 s"
    assert (fired.severity, fired.value, fired.since_ms) == ("critical", 120.0, at(110))
    assert resolved.value == 300.0
    assert resolved.since_ms == at(110)
    assert rig.alerts.view() == []


def test_condition_shorter_than_for_never_fires() -> None:
    rig = Rig([DOWN])
    rig.every(0, 100, state="Executing")
    rig.every(100, 200, state="Stopped")
    rig.every(200, 400, state="Executing")
    assert rig.out == []


def test_firing_alert_shows_in_the_view_and_pending_before() -> None:
    rig = Rig([DOWN])
    rig.every(0, 50, state="Stopped")
    [view] = rig.alerts.view()
    assert view.status is Status.PENDING
    assert view.since_ms == at(10)
    rig.every(50, 200, state="Stopped")
    [view] = rig.alerts.view()
    assert view.status is Status.FIRING
    assert view.firing_since_ms == at(130)


def test_signal_rule_hysteresis_and_for() -> None:
    rig = Rig([HOT])
    rig.every(0, 60, state="Executing", chiller_c=20.0)
    rig.every(60, 80, state="Executing", chiller_c=26.0)  # above, but only 20 s
    rig.every(80, 100, state="Executing", chiller_c=24.0)  # between: pending holds
    rig.every(100, 200, state="Executing", chiller_c=22.0)  # cleared
    assert rig.summary() == [("chiller-hot", True, 90.0), ("chiller-hot", False, 100.0)]
    assert rig.out[0].message == "laser-01: chiller at 24.0 °C"
    assert rig.out[1].value == 22.0


def test_signal_alerts_are_inhibited_while_the_machine_is_offline() -> None:
    rig = Rig([HOT, OFFLINE])
    rig.every(0, 8, chiller_c=30.0)  # no state yet: the machine counts as offline
    rig.timer(600)  # silent: still offline, no chiller alert
    assert rig.summary() == [("offline", True, 120.0)]
    rig.every(600, 700, state="Executing", chiller_c=30.0)  # back: running decided at 610
    assert rig.summary()[1:] == [("offline", False, 610.0), ("chiller-hot", True, 640.0)]


def test_offline_rule_fires_for_a_machine_gone_stale() -> None:
    rig = Rig([OFFLINE])
    rig.every(0, 100, state="Executing")
    rig.timer(400)  # last sample at 95: offline decided at 155, firing 120 s later
    # offline from the first input until the first state (10 s): too short to fire
    assert rig.summary() == [("offline", True, 275.0)]


def test_capacity_rule_fires_on_an_old_offered_window() -> None:
    rig = Rig([FREE])
    rig.every(0, 600, step=10, state="NotExecuting")  # idle from 0, available at 120
    rig.every(600, 700, step=10, state="Executing")
    assert rig.summary() == [("capacity", True, 300.0), ("capacity", False, 610.0)]
    assert rig.out[0].message == "laser-01 free for 300 s"


def test_rules_apply_to_their_machines_and_zones() -> None:
    machines = (laser("a-1", "north"), laser("b-1", "south"), laser("c-1", "south"))
    only_north = replace(DOWN, zones=frozenset({"north"}), machines=frozenset({"c-1"}))
    rig = Rig([only_north], *machines)
    for s in range(0, 300, 5):
        for m in ("a-1", "b-1", "c-1"):
            rig.sample(s, machine=m, state="Stopped")
    assert sorted(t.machine for t in rig.out) == ["a-1", "c-1"]


def test_same_millisecond_deadlines_fire_in_configuration_order() -> None:
    rig = Rig([DOWN], laser("b"), laser("a"))
    for s in range(0, 200, 5):
        rig.sample(s, machine="b", state="Stopped")
        rig.sample(s, machine="a", state="Stopped")
    assert [t.machine for t in rig.out] == ["b", "a"]


def test_a_restored_state_counts_from_the_first_input() -> None:
    alerts = Alerts([DOWN, OFFLINE], [laser()], states={"laser-01": State.DOWN})
    alerts.handle_timer(at(0))
    alerts.handle_timer(at(500))
    assert [(t.rule, t.firing, t.ts_ms) for t in alerts.transitions()] == [
        ("machine-down", True, at(120))
    ]


@pytest.mark.parametrize(
    ("template", "problem"),
    [
        ("{machine.__class__}", "unknown placeholder"),
        ("{nope}", "unknown placeholder"),
        ("{value[0]}", "unknown placeholder"),
        ("{value:{zone}}", "nested"),
        ("{machine", "template"),
        ("{value:.1q}", "template"),
    ],
)
def test_bad_templates_are_refused(template: str, problem: str) -> None:
    with pytest.raises(ValueError, match=problem):
        validate_template(template)


def test_render_is_plain_format_map() -> None:
    validate_template("{severity}: {machine} ({zone}) {value:.2f} {status}")
    assert render("{machine} {value:.1f}", {"machine": "m", "value": 2.25}) == "m 2.2"


@pytest.mark.parametrize(
    ("rule", "problem"),
    [
        (replace(DOWN, severity="page"), "severity"),
        (replace(DOWN, message="{x}"), "unknown placeholder"),
        (replace(HOT, condition=SignalCondition("t", above=1, below=0)), "exactly one"),
        (replace(HOT, condition=SignalCondition("t", above=1, clear=2)), "clear"),
        (replace(HOT, condition=SignalCondition("t", below=1, clear=0)), "clear"),
        (replace(DOWN, condition=StateCondition(State.DOWN, for_ms=-1)), "negative"),
    ],
)
def test_bad_rules_raise_at_construction(rule: AlertRule, problem: str) -> None:
    with pytest.raises(RulesConfigError, match=problem):
        Alerts([rule], [laser()])


def test_duplicate_rule_names_are_refused() -> None:
    with pytest.raises(RulesConfigError, match="twice"):
        Alerts([DOWN, DOWN], [laser()])


# -- chunking invariance ---------------------------------------------------------------------

STATES = ["Executing", "NotExecuting", "Stopped", "Resetting"]
RULES = [
    replace(DOWN, condition=StateCondition(State.DOWN, for_ms=30_000)),
    replace(HOT, condition=SignalCondition("chiller_c", above=25, clear=23, for_ms=20_000)),
    replace(OFFLINE, condition=OfflineCondition(for_ms=45_000)),
    replace(FREE, condition=CapacityCondition(idle_for_ms=90_000)),
]
MACHINES = (laser("m1", min_idle_ms=30_000), laser("m2", debounce_ms=0, stale_after_ms=40_000))

timeline_strategy = st.lists(
    st.tuples(
        st.sampled_from(["m1", "m2"]),
        st.integers(min_value=0, max_value=80),
        st.integers(min_value=0, max_value=3),
        st.sampled_from([20.0, 24.0, 26.0]),
    ),
    min_size=1,
    max_size=100,
)


def _samples(steps: list[tuple[str, int, int, float]]) -> list[Sample]:
    t = T0
    out = []
    for machine, gap, level, temp in steps:
        t += gap * 1000
        out.append(Sample(machine, t, {"state": STATES[level], "chiller_c": temp}))
    return out


def _run(samples: list[Sample], end: int, tick_ms: int | None) -> list[AlertTransition]:
    plant = Plant(PlantSpec(MACHINES, publish_interval_ms=300_000))
    alerts = Alerts(RULES, MACHINES)

    def timer(now: int) -> None:
        plant.handle_timer(now)
        alerts.observe(plant.events())
        alerts.handle_timer(now)

    now = samples[0].ts_ms
    for sample in samples:
        if tick_ms is None:  # the live shell: one timer at the earliest deadline
            while True:
                due = [d for d in (plant.next_deadline(), alerts.next_deadline()) if d]
                if not due or min(due) > sample.ts_ms:
                    break
                timer(min(due))
        else:
            while now + tick_ms <= sample.ts_ms:
                now += tick_ms
                timer(now)
        plant.receive(sample)
        alerts.observe(plant.events())
        alerts.receive(sample)
    timer(end)
    return alerts.transitions()


def _run_whole(samples: list[Sample], end: int) -> list[AlertTransition]:
    plant = Plant(PlantSpec(MACHINES, publish_interval_ms=300_000))
    alerts = Alerts(RULES, MACHINES)
    for sample in samples:
        plant.receive(sample)
        alerts.observe(plant.events())
        alerts.receive(sample)
    plant.handle_timer(end)
    alerts.observe(plant.events())
    alerts.handle_timer(end)
    return alerts.transitions()


@settings(max_examples=150, deadline=None)
@given(timeline_strategy, st.sampled_from([1_000, 7_000, 60_000]))
def test_same_input_in_any_chunking_gives_the_same_transitions(
    steps: list[tuple[str, int, int, float]], tick_ms: int
) -> None:
    samples = _samples(steps)
    end = samples[-1].ts_ms + 600_000
    whole = _run_whole(samples, end)
    assert _run(samples, end, tick_ms) == whole
    assert _run(samples, end, None) == whole


@settings(max_examples=100, deadline=None)
@given(timeline_strategy)
def test_every_episode_fires_once_and_resolves_once(
    steps: list[tuple[str, int, int, float]],
) -> None:
    samples = _samples(steps)
    transitions = _run_whole(samples, samples[-1].ts_ms + 600_000)
    last: dict[tuple[str, str], bool] = {}
    for t in transitions:
        key = (t.rule, t.machine)
        assert last.get(key, False) != t.firing  # strictly alternating, starting with firing
        last[key] = t.firing
    # 10 silent minutes: only offline alerts fire on, and the signal alerts offline inhibits
    # (they hold until a value clears them)
    assert {rule for (rule, _), firing in last.items() if firing} <= {"offline", "chiller-hot"}
