"""``interlock: unknown`` alert rules in the core: an instance per machine, pending then
firing while the machine's soft interlock does not read back, resolved when it reads back
again, carried across a checkpoint without firing again, and neither suppressed in
maintenance nor inhibited by a disconnected collector."""

from __future__ import annotations

import json
from dataclasses import replace

from tests.rules.timeline import laser

from pilotline.rules import State
from pilotline.rules.alerts import AlertRule, Alerts, InterlockCondition, Status

T0 = 1_800_000_000_000
MACHINES = [replace(laser("a", "z"), owner="acme"), replace(laser("b", "z"), owner="umbra")]
RULE = AlertRule(
    "interlock-unknown", "critical", "{machine} ({owner}): interlock {status} for {value:.0f} s",
    InterlockCondition(for_ms=10_000),
)


def fired(alerts: Alerts) -> list[tuple[str, bool, int, float]]:
    return [(t.machine, t.firing, t.ts_ms, t.value) for t in alerts.transitions()]


def test_fires_after_its_for_and_resolves_when_the_node_reads_back() -> None:
    alerts = Alerts([RULE], MACHINES, collectors={"a": "opcua", "b": "opcua"})
    alerts.handle_timer(T0)
    alerts.interlock("a", True, T0 + 1_000)
    alerts.interlock("a", True, T0 + 2_000)  # no change: nothing new
    alerts.interlock("nobody", True, T0 + 2_000)  # unknown machines are ignored
    alerts.handle_timer(T0 + 10_999)
    assert fired(alerts) == []
    assert [v.status for v in alerts.view()] == [Status.PENDING]
    alerts.handle_timer(T0 + 11_000)
    assert fired(alerts) == [("a", True, T0 + 11_000, 10.0)]
    # the collector drops: the alert holds (not inhibited)
    alerts.collector("opcua", False, T0 + 12_000)
    assert fired(alerts) == []
    alerts.interlock("a", False, T0 + 20_000)
    assert fired(alerts) == [("a", False, T0 + 20_000, 19.0)]
    assert alerts.view() == []


def test_a_firing_interlock_alert_survives_a_checkpoint() -> None:
    # in maintenance: not suppressed
    alerts = Alerts([RULE], MACHINES, states={"b": State.MAINTENANCE})
    alerts.handle_timer(T0)
    alerts.interlock("b", True, T0)
    alerts.handle_timer(T0 + 10_000)
    assert fired(alerts) == [("b", True, T0 + 10_000, 10.0)]
    saved = json.loads(json.dumps(alerts.checkpoint()))
    assert saved["interlocks"] == ["b"]

    again = Alerts([RULE], MACHINES)
    again.restore(saved)
    again.handle_timer(T0 + 60_000)
    assert fired(again) == []  # neither resolved nor fired again by the restart
    again.interlock("b", False, T0 + 61_000)
    assert fired(again) == [("b", False, T0 + 61_000, 61.0)]


def test_a_checkpoint_from_before_interlock_rules_restores() -> None:
    alerts = Alerts([RULE], MACHINES)
    alerts.handle_timer(T0)
    saved = alerts.checkpoint()
    del saved["interlocks"]
    again = Alerts([RULE], MACHINES)
    again.restore(saved)
    assert fired(again) == []
    assert again.view() == []
