"""Alert rules on synthetic timelines: the plant and the alert core together, no clock."""

from __future__ import annotations

import json
from dataclasses import dataclass, replace

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from tests.rules.timeline import HOUR, T0, at, laser

from pilotline.rules import (
    MachineSpec,
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
    CollectorCondition,
    OfflineCondition,
    SignalCondition,
    StateCondition,
    Status,
    render,
    validate_template,
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
    # availability ends at the first running sample, before the debounce confirms it
    assert rig.summary() == [("capacity", True, 300.0), ("capacity", False, 600.0)]
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


# -- chunking invariance and checkpoints ----------------------------------------------------


@dataclass(frozen=True, slots=True)
class Link:
    """A collector's connection changed (the shell's input besides samples)."""

    collector: str
    connected: bool
    ts_ms: int


Input = Sample | Link

STATES = ["Executing", "NotExecuting", "Stopped", "Resetting"]  # Resetting: maintenance
RULES = [
    replace(DOWN, condition=StateCondition(State.DOWN, for_ms=30_000)),
    replace(HOT, condition=SignalCondition("chiller_c", above=25, clear=23, for_ms=20_000)),
    replace(OFFLINE, condition=OfflineCondition(for_ms=45_000)),
    replace(FREE, condition=CapacityCondition(idle_for_ms=40_000)),
    AlertRule("link", "critical", "{machine} lost", CollectorCondition(for_ms=25_000)),
    AlertRule("service", "info", "{machine}", StateCondition(State.MAINTENANCE, for_ms=20_000)),
    replace(
        HOT,
        name="chiller-always",
        condition=SignalCondition("chiller_c", above=25, clear=23, for_ms=10_000),
        suppress_in_maintenance=False,
    ),
]
MACHINES = (laser("m1", min_idle_ms=30_000), laser("m2", debounce_ms=0, stale_after_ms=40_000))
COLLECTORS = {"m1": "c1"}  # m2 has no collector

timeline_strategy = st.lists(
    st.tuples(
        st.sampled_from(["m1", "m2", "m1", "m2", "c1+", "c1-"]),
        st.integers(min_value=0, max_value=80),
        st.integers(min_value=0, max_value=3),
        st.sampled_from([20.0, 24.0, 26.0]),
    ),
    min_size=1,
    max_size=100,
)


def _inputs(steps: list[tuple[str, int, int, float]]) -> list[Input]:
    t = T0
    out: list[Input] = []
    for who, gap, level, temp in steps:
        t += gap * 1000
        if who.startswith("c1"):
            out.append(Link("c1", who == "c1+", t))
        else:
            out.append(Sample(who, t, {"state": STATES[level], "chiller_c": temp}))
    return out


def _alerts() -> Alerts:
    return Alerts(RULES, MACHINES, collectors=COLLECTORS)


class Shell:
    """The gateway's loop in miniature: the plant first, then the alert core."""

    def __init__(self) -> None:
        self.plant = Plant(PlantSpec(MACHINES, publish_interval_ms=300_000))
        self.alerts = _alerts()
        self.out: list[AlertTransition] = []

    def feed(self, item: Input) -> None:
        if isinstance(item, Sample):
            self.plant.receive(item)
            self.alerts.observe(self.plant.events())
            self.alerts.receive(item)
        else:  # advance the plant to the input's time first, as receive does for a sample
            self.plant.handle_timer(item.ts_ms)
            self.alerts.observe(self.plant.events())
            self.alerts.collector(item.collector, item.connected, item.ts_ms)

    def timer(self, now: int) -> None:
        self.plant.handle_timer(now)
        self.alerts.observe(self.plant.events())
        self.alerts.handle_timer(now)

    def restart(self) -> None:
        """Checkpoint the alert core through strict JSON and continue in a fresh one."""
        self.out += self.alerts.transitions()
        data = json.loads(json.dumps(self.alerts.checkpoint(), allow_nan=False))
        self.alerts = _alerts()
        self.alerts.restore(data)


def _run(
    inputs: list[Input], end: int, tick_ms: int | None, split: int | None = None
) -> list[AlertTransition]:
    """``tick_ms``: a timer every tick, None: one timer at each earliest deadline (the live
    shell), 0: no timer until the end. ``split``: restart from a checkpoint before that
    input (``len(inputs)``: before the last timer)."""
    shell = Shell()
    now = inputs[0].ts_ms
    for k, item in enumerate(inputs):
        if tick_ms is None:
            while True:
                due = [d for d in (shell.plant.next_deadline(), shell.alerts.next_deadline()) if d]
                if not due or min(due) > item.ts_ms:
                    break
                shell.timer(min(due))
        elif tick_ms:
            while now + tick_ms <= item.ts_ms:
                now += tick_ms
                shell.timer(now)
        if k == split:
            shell.restart()
        shell.feed(item)
    if split == len(inputs):
        shell.restart()
    shell.timer(end)
    return shell.out + shell.alerts.transitions()


@settings(max_examples=150, deadline=None)
@given(timeline_strategy, st.sampled_from([1_000, 7_000, 60_000]))
def test_same_input_in_any_chunking_gives_the_same_transitions(
    steps: list[tuple[str, int, int, float]], tick_ms: int
) -> None:
    inputs = _inputs(steps)
    end = inputs[-1].ts_ms + 600_000
    whole = _run(inputs, end, 0)
    assert _run(inputs, end, tick_ms) == whole
    assert _run(inputs, end, None) == whole


@settings(max_examples=150, deadline=None)
@given(timeline_strategy, st.sampled_from([0, 7_000, None]), st.data())
def test_a_restart_from_a_checkpoint_anywhere_changes_nothing(
    steps: list[tuple[str, int, int, float]], tick_ms: int | None, data: st.DataObject
) -> None:
    inputs = _inputs(steps)
    end = inputs[-1].ts_ms + 600_000
    split = data.draw(st.integers(min_value=0, max_value=len(inputs)), label="split")
    assert _run(inputs, end, tick_ms, split) == _run(inputs, end, 0)


@settings(max_examples=100, deadline=None)
@given(timeline_strategy)
def test_every_episode_fires_once_and_resolves_once(
    steps: list[tuple[str, int, int, float]],
) -> None:
    inputs = _inputs(steps)
    transitions = _run(inputs, inputs[-1].ts_ms + 600_000, 0)
    last: dict[tuple[str, str], bool] = {}
    for t in transitions:
        key = (t.rule, t.machine)
        assert last.get(key, False) != t.firing  # strictly alternating, starting with firing
        last[key] = t.firing
        if t.rule == "link":
            assert (t.machine, t.zone, t.owner) == ("c1", "photonics", "")
        else:
            assert t.machine in ("m1", "m2")
    # 10 silent minutes: offline alerts fire on, and so do the signal alerts offline inhibits
    # (they hold until a value clears them); while c1 is down, its alert and the state
    # alerts of m1 it holds
    links = [i.connected for i in inputs if isinstance(i, Link)]
    cut = bool(links) and not links[-1]
    allowed = {"offline", "chiller-hot", "chiller-always"}
    for (rule, machine), firing in last.items():
        if firing and rule not in allowed:
            assert cut
            assert (rule, machine) in {("link", "c1"), ("machine-down", "m1"), ("service", "m1")}
    assert last.get(("link", "c1"), False) == cut
