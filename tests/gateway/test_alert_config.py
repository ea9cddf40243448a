"""The ``alerts:`` section: rules from YAML, every mistake with its path and line."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.sites import load_text, refused

from pilotline.gateway.config import ConfigIssue, load_config
from pilotline.rules import State
from pilotline.rules.alerts import (
    CapacityCondition,
    CollectorCondition,
    InterlockCondition,
    OfflineCondition,
    SignalCondition,
    StateCondition,
)

SITE = """\
site: test-site
mqtt:
  url: mqtt://127.0.0.1:1883
zones:
  - id: z1
    machines:
      - id: m1
        owner: acme
        mqtt: {topic: t/m1}
        state: {signal: state}
  - id: z2
    machines:
      - id: m2
        owner: acme
        mqtt: {topic: t/m2}
        state: {signal: state}
alerts:
  rules:
"""

GOOD = """\
    - name: down
      severity: critical
      state: down
      for: 2m
      message: "{machine} in {zone} down for {value:.0f} s"
      zones: [z1]
    - name: stale
      state: offline
      for: 1h30m
    - name: chiller-hot
      signal: chiller_c
      above: 25
      clear: 23
      for: 30s
      machines: [m2]
    - name: free
      severity: info
      offered_idle_for: 45m
"""


def load(tmp_path: Path, rules: str) -> object:
    return load_text(tmp_path, SITE + rules)


def issues(tmp_path: Path, rules: str) -> list[ConfigIssue]:
    return refused(tmp_path, SITE + rules)


def test_rules_become_core_rules(tmp_path: Path) -> None:
    config = load(tmp_path, GOOD)
    down, stale, hot, free = config.alert_rules()  # type: ignore[attr-defined]
    assert down.condition == StateCondition(State.DOWN, 120_000)
    assert down.zones == frozenset({"z1"})
    assert down.machines is None
    assert down.severity == "critical"
    assert stale.condition == OfflineCondition(5_400_000)
    assert stale.severity == "warning"
    assert hot.condition == SignalCondition("chiller_c", 25.0, None, 23.0, 30_000)
    assert hot.machines == frozenset({"m2"})
    assert free.condition == CapacityCondition(2_700_000)


def test_no_alerts_section_means_no_rules(tmp_path: Path) -> None:
    path = tmp_path / "p.yaml"
    path.write_text(SITE.removesuffix("alerts:\n  rules:\n"), encoding="utf-8")
    assert load_config(path, check_files=False).alert_rules() == ()


@pytest.mark.parametrize(
    ("rule", "path", "fragment"),
    [
        ("    - {name: a, state: down, for: 2}\n", "alerts.rules[0].for", "needs a unit"),
        ("    - {name: a, state: down, for: 2 min}\n", "alerts.rules[0].for", "not a duration"),
        ("    - {name: a, state: broken}\n", "alerts.rules[0].state", "'down'"),
        ("    - {name: a, state: down, severity: page}\n", "alerts.rules[0].severity", "info"),
        ("    - {name: a, state: down, message: '{nope}'}\n", "alerts.rules[0].message",
         "unknown placeholder {nope}"),
        ("    - {name: a, state: down, message: '{machine.__class__}'}\n",
         "alerts.rules[0].message", "unknown placeholder"),
        ("    - {name: a}\n", "alerts.rules[0]", "exactly one condition"),
        ("    - {name: a}\n", "alerts.rules[0]", "offered_idle_for, collector or interlock"),
        ("    - {name: a, interlock: stuck}\n", "alerts.rules[0].interlock",
         "write interlock: unknown (got 'stuck')"),
        ("    - {name: a, interlock: unknown, collector: disconnected}\n", "alerts.rules[0]",
         "not collector and interlock"),
        ("    - {name: a, interlock: unknown, suppress_in_maintenance: true}\n",
         "alerts.rules[0]", "suppress_in_maintenance only goes with"),
        ("    - {name: a, state: down, collector: disconnected}\n", "alerts.rules[0]",
         "not state and collector"),
        ("    - {name: a, collector: connected}\n", "alerts.rules[0].collector",
         "write collector: disconnected (got 'connected')"),
        ("    - {name: a, collector: disconnected, above: 5}\n", "alerts.rules[0]",
         "only go with signal"),
        ("    - {name: a, collector: disconnected, suppress_in_maintenance: true}\n",
         "alerts.rules[0]", "suppress_in_maintenance only goes with"),
        ("    - {name: a, state: offline, suppress_in_maintenance: false}\n",
         "alerts.rules[0]", "suppress_in_maintenance only goes with"),
        ("    - {name: a, state: down, suppress_in_maintenance: maybe}\n",
         "alerts.rules[0].suppress_in_maintenance", "boolean"),
        ("    - {name: a, state: down, signal: t}\n", "alerts.rules[0]", "not state and signal"),
        ("    - {name: a, signal: t}\n", "alerts.rules[0]", "exactly one of above and below"),
        ("    - {name: a, signal: t, above: 5, clear: 6}\n", "alerts.rules[0]", "must not exceed"),
        ("    - {name: a, state: down, above: 5}\n", "alerts.rules[0]", "only go with signal"),
        ("    - {name: a, state: down, fro: 2m}\n", "alerts.rules[0].fro", "did you mean 'for'"),
        ("    - {name: a, state: down, zones: [z3]}\n", "alerts.rules[0].zones[0]", "no zone 'z3'"),
        ("    - {name: a, state: down, machines: [m3]}\n", "alerts.rules[0].machines[0]",
         "no machine 'm3'"),
        ("    - {name: a, state: down}\n    - {name: a, state: idle}\n", "alerts.rules[1].name",
         "duplicate alert rule 'a'"),
    ],
)
def test_mistakes_have_paths_and_lines(
    tmp_path: Path, rule: str, path: str, fragment: str
) -> None:
    [issue] = issues(tmp_path, rule)
    assert issue.path == path
    assert fragment in issue.message
    assert issue.line is not None
    assert issue.line >= SITE.count("\n") + 1


def test_collector_rules_and_maintenance_suppression_load(tmp_path: Path) -> None:
    config = load(
        tmp_path,
        """\
    - name: link
      severity: critical
      collector: disconnected
      for: 1m
      zones: [z2]
    - name: link-now
      collector: disconnected
    - name: hot-anyway
      signal: chiller_c
      above: 25
      suppress_in_maintenance: false
    - {name: down, state: down}
    - {name: permit, interlock: unknown, for: 30s}
""",
    )
    link, now, hot, down, permit = config.alert_rules()  # type: ignore[attr-defined]
    assert permit.condition == InterlockCondition(30_000)
    assert link.condition == CollectorCondition(60_000)
    assert link.zones == frozenset({"z2"})
    assert now.condition == CollectorCondition(0)
    assert hot.suppress_in_maintenance is False
    assert down.suppress_in_maintenance is True
