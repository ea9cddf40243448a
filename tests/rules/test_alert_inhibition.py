"""Alert inhibition (maintenance, collector outages) and checkpoints, on synthetic timelines
with the plant and the alert core together, no clock."""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import replace

import pytest
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
)

DOWN = AlertRule(
    "machine-down", "critical", "{machine} {state}", StateCondition(State.DOWN, for_ms=120_000)
)
HOT = AlertRule(
    "chiller-hot",
    "warning",
    "{machine}: chiller at {value:.1f} °C",
    SignalCondition("chiller_c", above=25.0, clear=23.0, for_ms=30_000),
)
OFFLINE = AlertRule("offline", "warning", "{machine} offline", OfflineCondition(for_ms=120_000))
LINK = AlertRule(
    "collector-down",
    "critical",
    "{machine} ({zone}) {state} for {value:.0f} s",
    CollectorCondition(for_ms=30_000),
)
SERVICE = AlertRule("in-service", "info", "{machine}", StateCondition(State.MAINTENANCE, 60_000))
FREE = AlertRule("capacity", "info", "{machine}", CapacityCondition(idle_for_ms=300_000))

Summary = list[tuple[str, str, bool, float]]


class Rig:
    """The shell's wiring in miniature: the plant first, then the alert core."""

    def __init__(
        self,
        rules: Sequence[AlertRule],
        machines: Sequence[MachineSpec] = (),
        collectors: Mapping[str, str] | None = None,
        *,
        alerted: Sequence[MachineSpec] | None = None,
    ) -> None:
        """``alerted``: the alert core's machines, when not all the plant's."""
        self.machines = tuple(machines) or (laser(),)
        self.rules = rules
        self.collectors = collectors
        self.plant = Plant(PlantSpec(self.machines, publish_interval_ms=HOUR))
        self.alerts = Alerts(
            rules, self.machines if alerted is None else alerted, collectors=collectors
        )
        self.out: list[AlertTransition] = []

    def sample(self, seconds: float, machine: str = "laser-01", **values: float | str) -> None:
        sample = Sample(machine, at(seconds), values)
        self.plant.receive(sample)
        self.alerts.observe(self.plant.events())
        self.alerts.receive(sample)
        self.out += self.alerts.transitions()

    def every(
        self, start: int, end: int, machines: Sequence[str] = ("laser-01",), **values: float | str
    ) -> None:
        for s in range(start, end, 5):
            for m in machines:
                self.sample(s, machine=m, **values)

    def link(self, seconds: float, connected: bool, name: str = "gw") -> None:
        self.plant.handle_timer(at(seconds))
        self.alerts.observe(self.plant.events())
        self.alerts.collector(name, connected, at(seconds))
        self.out += self.alerts.transitions()

    def timer(self, seconds: float) -> None:
        self.plant.handle_timer(at(seconds))
        self.alerts.observe(self.plant.events())
        self.alerts.handle_timer(at(seconds))
        self.out += self.alerts.transitions()

    def restart(
        self,
        rules: Sequence[AlertRule] | None = None,
        machines: Sequence[MachineSpec] | None = None,
    ) -> None:
        """A new alert core, restored from this one's checkpoint through strict JSON."""
        self.out += self.alerts.transitions()
        data = json.loads(json.dumps(self.alerts.checkpoint(), allow_nan=False))
        self.alerts = Alerts(
            self.rules if rules is None else rules,
            self.machines if machines is None else machines,
            collectors=self.collectors,
        )
        self.alerts.restore(data)
        self.out += self.alerts.transitions()

    def summary(self) -> Summary:
        return [(t.rule, t.machine, t.firing, (t.ts_ms - T0) / 1000) for t in self.out]


# -- maintenance -----------------------------------------------------------------------------


def test_maintenance_resolves_a_firing_signal_alert_and_for_restarts_after_it() -> None:
    rig = Rig([HOT])
    rig.every(0, 100, state="Executing", chiller_c=30.0)  # running decided at 10
    rig.every(100, 200, state="Resetting", chiller_c=30.0)  # maintenance decided at 110
    rig.every(200, 300, state="Executing", chiller_c=30.0)  # running again, decided at 210
    assert rig.summary() == [
        ("chiller-hot", "laser-01", True, 40.0),
        ("chiller-hot", "laser-01", False, 110.0),
        ("chiller-hot", "laser-01", True, 240.0),
    ]
    assert rig.out[1].value == 30.0
    assert rig.out[1].since_ms == at(10)


def test_maintenance_sends_a_pending_signal_alert_back_and_keeps_its_hysteresis() -> None:
    rig = Rig([HOT])
    rig.every(0, 90, state="Executing", chiller_c=20.0)
    rig.every(90, 100, state="Executing", chiller_c=30.0)  # pending from 90
    rig.every(100, 300, state="Resetting", chiller_c=30.0)  # maintenance at 110: 20 s only
    assert rig.out == []
    assert rig.alerts.view() == []
    # 24 °C is between clear and above: the last answer (hot) holds, from the end of it
    rig.every(300, 400, state="Executing", chiller_c=24.0)
    assert rig.summary() == [("chiller-hot", "laser-01", True, 340.0)]


def test_a_signal_cleared_during_maintenance_does_not_fire_after_it() -> None:
    rig = Rig([HOT])
    rig.every(0, 100, state="Resetting", chiller_c=30.0)
    rig.every(100, 200, state="Resetting", chiller_c=22.0)  # cleared while suppressed
    rig.every(200, 400, state="Executing", chiller_c=24.0)
    assert rig.out == []


def test_suppression_is_per_rule_and_a_maintenance_rule_is_never_suppressed() -> None:
    loud = replace(HOT, name="chiller-loud", suppress_in_maintenance=False)
    rig = Rig([HOT, loud, SERVICE])
    rig.every(0, 200, state="Resetting", chiller_c=30.0)  # maintenance decided at 10
    assert rig.summary() == [
        ("chiller-loud", "laser-01", True, 40.0),
        ("in-service", "laser-01", True, 70.0),
    ]


def test_maintenance_resolves_a_firing_state_alert_of_a_suppressible_rule() -> None:
    idle = AlertRule("idle", "info", "{machine}", StateCondition(State.IDLE, for_ms=0))
    rig = Rig([idle, DOWN])
    rig.every(0, 50, state="NotExecuting")
    rig.every(50, 100, state="Resetting")
    assert rig.summary() == [("idle", "laser-01", True, 10.0), ("idle", "laser-01", False, 60.0)]


# -- collectors ------------------------------------------------------------------------------

FLEET = tuple(laser(f"m{i:02}") for i in range(20))
NAMES = tuple(m.id for m in FLEET)
ON_GW = dict.fromkeys(NAMES, "gw")


def test_a_collector_that_drops_raises_one_alert_not_one_per_machine() -> None:
    rig = Rig([DOWN, OFFLINE, LINK, HOT], FLEET, ON_GW)
    rig.every(0, 100, NAMES, state="Executing", chiller_c=20.0)
    rig.link(100, False)
    rig.timer(1000)  # every machine went stale at 155
    assert rig.summary() == [("collector-down", "gw", True, 130.0)]
    [fired] = rig.out
    assert (fired.zone, fired.owner, fired.value) == ("photonics", "", 30.0)
    assert fired.message == "gw (photonics) disconnected for 30 s"
    [view] = rig.alerts.view()
    assert (view.rule, view.machine, view.status, view.value) == (
        "collector-down",
        "gw",
        Status.FIRING,
        900.0,
    )


def test_after_a_reconnect_only_a_machine_still_silent_alerts_after_its_for() -> None:
    rig = Rig([DOWN, OFFLINE, LINK], FLEET, ON_GW)
    rig.every(0, 100, NAMES, state="Executing")
    rig.link(100, False)
    rig.timer(1000)
    rig.out.clear()
    rig.link(1000, True)
    alive = [m for m in NAMES if m != "m07"]
    rig.every(1000, 1115, alive, state="Executing")  # running again at 1010
    rig.timer(1119)
    assert rig.summary() == [("collector-down", "gw", False, 1000.0)]
    assert rig.out[0].value == 900.0
    rig.every(1115, 1200, alive, state="Executing")
    assert rig.summary()[1:] == [("offline", "m07", True, 1120.0)]


def test_a_collector_of_machines_in_several_zones_is_in_zone_star() -> None:
    machines = (laser("a", "north"), laser("b", "south"), laser("c", "south"))
    rig = Rig([LINK], machines, {"a": "gw", "b": "gw", "c": "gw2"})
    rig.link(0, False)
    rig.link(0, False, "gw2")
    rig.timer(100)
    assert [(t.machine, t.zone) for t in rig.out] == [("gw", "*"), ("gw2", "south")]


def test_a_collector_rule_applies_if_any_of_its_machines_matches() -> None:
    machines = (laser("a", "north"), laser("b", "south"), laser("c", "south"))
    only_b = replace(LINK, machines=frozenset({"b"}))
    rig = Rig([only_b], machines, {"a": "gw", "b": "gw", "c": "gw2"})
    rig.link(0, False)
    rig.link(0, False, "gw2")
    rig.link(0, False, "nobody")  # not a collector of ours: ignored
    rig.timer(100)
    assert rig.summary() == [("collector-down", "gw", True, 30.0)]


def test_machines_without_a_collector_still_alert_offline() -> None:
    machines = (laser("a"), laser("b"))
    rig = Rig([OFFLINE], machines, {"a": "gw"})
    rig.every(0, 100, ("a", "b"), state="Executing")
    rig.link(100, False)
    rig.timer(1000)
    assert rig.summary() == [("offline", "b", True, 275.0)]


def test_an_outage_sends_a_pending_offline_alert_back_and_holds_a_firing_one() -> None:
    machines = (laser("a"), laser("b"))
    rig = Rig([OFFLINE], machines, {"a": "gw", "b": "gw"})
    rig.every(0, 100, ("a", "b"), state="Executing")
    rig.every(100, 200, ("b",), state="Executing")  # a: offline at 155, firing at 275
    rig.every(200, 300, ("b",), state="Executing")
    rig.link(300, False)  # b: pending from 355, went back
    rig.timer(1000)
    assert rig.summary() == [("offline", "a", True, 275.0)]
    rig.link(1000, True)  # a is still offline: its alert goes on; b's starts over
    rig.every(1000, 1100, ("b",), state="Executing")
    rig.every(1100, 1200, ("a", "b"), state="Executing")  # a: running at 1110
    assert rig.summary()[1:] == [("offline", "a", False, 1110.0)]


def test_a_firing_state_alert_holds_through_an_outage_and_is_judged_on_reconnect() -> None:
    rig = Rig([DOWN, OFFLINE], (laser(),), {"laser-01": "gw"})
    rig.every(0, 300, state="Stopped")  # down from 10, firing at 130
    rig.link(300, False)
    rig.timer(600)  # stale at 355: the down alert holds
    assert rig.summary() == [("machine-down", "laser-01", True, 130.0)]
    rig.link(600, True)  # offline now: down resolves, offline pending
    rig.every(600, 800, state="Stopped")  # down again from 610
    assert rig.summary()[1:] == [
        ("machine-down", "laser-01", False, 600.0),
        ("machine-down", "laser-01", True, 730.0),
    ]


def test_a_short_outage_changes_nothing() -> None:
    rig = Rig([DOWN, OFFLINE, LINK], (laser(),), {"laser-01": "gw"})
    rig.every(0, 300, state="Stopped")
    rig.link(300, False)
    rig.link(320, True)
    rig.every(320, 500, state="Stopped")
    assert rig.summary() == [("machine-down", "laser-01", True, 130.0)]


def test_collectors_of_unknown_machines_are_refused() -> None:
    with pytest.raises(RulesConfigError, match="not configured"):
        Alerts([LINK], [laser()], collectors={"nope": "gw"})
    with pytest.raises(RulesConfigError, match="no name"):
        Alerts([LINK], [laser()], collectors={"laser-01": ""})


# -- checkpoints -----------------------------------------------------------------------------


def test_a_restored_firing_alert_does_not_fire_again_and_resolves_once() -> None:
    rig = Rig([DOWN])
    rig.every(0, 200, state="Stopped")
    rig.restart()
    [view] = rig.alerts.view()
    assert (view.status, view.since_ms, view.firing_since_ms) == (
        Status.FIRING,
        at(10),
        at(130),
    )
    rig.every(200, 300, state="Stopped")
    rig.every(300, 400, state="Executing")
    assert rig.summary() == [
        ("machine-down", "laser-01", True, 130.0),
        ("machine-down", "laser-01", False, 310.0),
    ]
    assert rig.out[1].value == 300.0


def test_a_restored_pending_alert_fires_at_its_original_deadline() -> None:
    rig = Rig([DOWN, HOT, LINK], (laser(),), {"laser-01": "gw"})
    rig.every(0, 80, state="Stopped", chiller_c=20.0)
    rig.every(80, 100, state="Stopped", chiller_c=30.0)  # hot pending from 80
    rig.link(100, False)  # sends the pending down alert back (it would fire at 130)
    rig.restart()
    rig.timer(200)
    assert rig.summary() == [
        ("chiller-hot", "laser-01", True, 110.0),
        ("collector-down", "gw", True, 130.0),
    ]


def test_a_restored_capacity_alert_keeps_its_window() -> None:
    rig = Rig([FREE])
    rig.every(0, 200, state="NotExecuting")  # idle from 0, offered at 120
    rig.restart()
    rig.every(200, 400, state="NotExecuting")
    assert rig.summary() == [("capacity", "laser-01", True, 300.0)]


def test_restore_ignores_what_is_no_longer_configured() -> None:
    plant = (laser("a"), laser("b"), laser("c"))
    rig = Rig([DOWN, HOT, OFFLINE], plant, alerted=plant[:2])
    rig.every(0, 200, ("a", "b"), state="Stopped", chiller_c=30.0)
    assert {(r, m) for r, m, f, _ in rig.summary()} == {
        (rule, m) for rule in ("machine-down", "chiller-hot") for m in ("a", "b")
    }
    rig.out.clear()
    cooler = replace(HOT, condition=SignalCondition("chiller_c", above=40.0))  # changed, no for:
    slower = replace(DOWN, condition=StateCondition(State.DOWN, for_ms=600_000))  # for: only
    rig.restart([slower, cooler, FREE], (laser("a"), laser("c")))
    # the changed rule's episode is over; the offline rule and machine b are gone
    assert rig.summary() == [("chiller-hot", "a", False, 195.0)]
    assert [(v.rule, v.machine, v.status) for v in rig.alerts.view()] == [
        ("machine-down", "a", Status.FIRING)
    ]
    for s in range(200, 900, 5):
        rig.sample(s, "a", state="Stopped", chiller_c=30.0)
        rig.sample(s, "c", state="Stopped", chiller_c=50.0)  # new: down from 210
    assert rig.summary()[1:] == [
        ("chiller-hot", "c", True, 210.0),  # offline until then; no for:
        ("machine-down", "c", True, 810.0),
    ]


def test_a_shorter_for_fires_a_restored_pending_alert_at_once() -> None:
    rig = Rig([DOWN])
    rig.every(0, 100, state="Stopped")  # pending since 10
    rig.restart([replace(DOWN, condition=StateCondition(State.DOWN, for_ms=30_000))])
    assert rig.summary() == [("machine-down", "laser-01", True, 95.0)]


def test_a_checkpoint_before_any_input_restores_to_a_fresh_core() -> None:
    rig = Rig([OFFLINE])
    rig.restart()
    rig.timer(0)
    rig.timer(500)
    assert rig.summary() == [("offline", "laser-01", True, 120.0)]


@pytest.mark.parametrize(
    "mangle",
    [
        lambda d: {"version": 99},
        lambda d: {**d, "instances": "x"},
        lambda d: {**d, "now_ms": "soon"},
        lambda d: {**d, "machines": {"laser-01": {"state": "broken"}}},
        lambda d: {**d, "instances": [{**d["instances"][0], "status": "asleep"}]},
        lambda d: {**d, "instances": [{**d["instances"][0], "since": True}]},
        lambda d: {**d, "collectors": {"gw": {"connected": "yes"}}},
    ],
)
def test_a_malformed_checkpoint_is_refused_and_changes_nothing(mangle: object) -> None:
    rig = Rig([DOWN])
    rig.every(0, 200, state="Stopped")
    data = mangle(rig.alerts.checkpoint())  # type: ignore[operator]
    fresh = Alerts([DOWN], [laser()])
    with pytest.raises(ValueError, match="checkpoint"):
        fresh.restore(data)
    assert fresh.now_ms is None
    assert fresh.view() == []


def test_restore_needs_a_core_that_has_seen_no_input() -> None:
    alerts = Alerts([DOWN], [laser()])
    data = alerts.checkpoint()
    alerts.handle_timer(at(0))
    with pytest.raises(RuntimeError, match="no input"):
        alerts.restore(data)
