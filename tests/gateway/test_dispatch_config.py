"""``alerts:`` notification policy keys: group_by, group_wait, group_interval, repeat_interval."""

from __future__ import annotations

from pathlib import Path

import pytest
from tests.sites import load_text, refused

from pilotline.gateway.config import ConfigIssue, SiteConfig
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch import Route

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
alerts:
  webhooks:
    - {name: ops, url: "http://127.0.0.1:9/hook"}
    - {name: pager, url: "http://127.0.0.1:9/page", min_severity: critical}
"""


def load(tmp_path: Path, policy: str) -> SiteConfig:
    return load_text(tmp_path, SITE + policy)


def issues(tmp_path: Path, policy: str) -> list[ConfigIssue]:
    return refused(tmp_path, SITE + policy)


def test_defaults(tmp_path: Path) -> None:
    alerts = load(tmp_path, "").alerts
    assert alerts.group_by == ["rule", "zone"]
    assert (alerts.group_wait, alerts.group_interval, alerts.repeat_interval) == (
        10_000,
        60_000,
        4 * 3_600_000,
    )


def test_the_policy_builds_the_dispatcher(tmp_path: Path) -> None:
    alerts = load(
        tmp_path,
        "  group_by: [zone, severity]\n"
        "  group_wait: 30s\n"
        "  group_interval: 5m\n"
        "  repeat_interval: 1h30m\n",
    ).alerts
    assert alerts.group_by == ["zone", "severity"]
    assert (alerts.group_wait, alerts.group_interval, alerts.repeat_interval) == (
        30_000,
        300_000,
        5_400_000,
    )
    d = alerts.dispatcher()
    assert d.group_by == ("zone", "severity")
    assert d.routes == (Route("ops"), Route("pager", "critical"))
    t0 = 1_700_000_000_000
    d.receive([AlertTransition("down", "m1", "z1", "acme", "warning", True, 1.0, "", t0, t0)])
    d.handle_timer(t0 + 29_999)
    assert d.notifications() == []
    d.handle_timer(t0 + 30_000)  # group_wait, and only the channel that wants warnings
    [note] = d.notifications()
    assert (note.channel, note.group) == ("ops", (("zone", "z1"), ("severity", "warning")))


def test_an_empty_group_by_is_one_group_per_channel(tmp_path: Path) -> None:
    assert load(tmp_path, "  group_by: []\n").alerts.dispatcher().group_by == ()


@pytest.mark.parametrize(
    ("policy", "path", "fragment"),
    [
        ("  group_by: [zone, rule, zone]\n", "alerts.group_by", "'zone' is listed twice"),
        ("  group_by: [zone, site]\n", "alerts.group_by[1]", "'rule', 'zone', 'severity'"),
        ("  group_by: zone\n", "alerts.group_by", "expected a list"),
        ("  group_wait: 10\n", "alerts.group_wait", "needs a unit"),
        ("  group_wait: soon\n", "alerts.group_wait", "not a duration"),
        ("  group_interval: 0s\n", "alerts.group_interval", "must be positive"),
        (
            "  repeat_interval: 30s\n",
            "alerts.repeat_interval",
            "repeat_interval (30 s) must not be shorter than group_interval (60 s)",
        ),
        (
            "  group_interval: 10m\n  repeat_interval: 5m\n",
            "alerts.repeat_interval",
            "must not be shorter than group_interval (600 s)",
        ),
        ("  grop_by: [zone]\n", "alerts.grop_by", "did you mean 'group_by'"),
    ],
)
def test_mistakes_have_paths_and_lines(
    tmp_path: Path, policy: str, path: str, fragment: str
) -> None:
    [issue] = issues(tmp_path, policy)
    assert issue.path == path
    assert fragment in issue.message
    assert issue.line is not None
    assert issue.line >= SITE.count("\n") + 1
