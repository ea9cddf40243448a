"""Alert notifications: the ``alerts.webhooks`` configuration, the bodies, and the rows the
gateway commits with each transition (delivery over real HTTP is in tests/integration)."""

from __future__ import annotations

import dataclasses
import json
from pathlib import Path

import pytest

from pilotline.gateway.config import ConfigError, load_config
from pilotline.gateway.notify import payload, payload_json, render, slack_text
from pilotline.gateway.service import Gateway
from pilotline.gateway.store import Store
from pilotline.rules import Sample
from pilotline.rules.alerts import AlertTransition

T0 = 1_795_737_600_000

SITE = """\
site: unit
mqtt: {{url: "mqtt://127.0.0.1:1"}}
store: {store}
defaults: {{debounce_s: 0, stale_after_s: 60, min_idle_s: 0, publish_interval_s: 60}}
zones:
  - id: photonics
    machines:
      - id: laser-01
        owner: acme
        mqtt: {{topic: t/laser-01}}
        state: {{signal: state}}
alerts:
  rules:
    - name: laser-down
      severity: critical
      state: down
      for: 2m
      message: "{{machine}} down for {{value:.0f}} s"
    - name: laser-idle
      severity: info
      state: idle
      for: 1m
  webhooks:
"""


def write(tmp_path: Path, hooks: str) -> Path:
    path = tmp_path / "site.yaml"
    path.write_text(SITE.format(store=tmp_path / "gw.db") + hooks, encoding="utf-8")
    return path


def problems(tmp_path: Path, hooks: str) -> list[str]:
    with pytest.raises(ConfigError) as caught:
        load_config(write(tmp_path, hooks))
    return [f"{i.path}: {i.message}" for i in caught.value.issues]


def test_webhooks_config(tmp_path: Path) -> None:
    (tmp_path / "hook.url").write_text("https://hooks.example.com/services/SECRET\n")
    config = load_config(
        write(
            tmp_path,
            "    - {name: ops, url: 'http://127.0.0.1:9/x', min_severity: critical}\n"
            "    - {name: chat, url_file: hook.url, format: slack}\n",
        )
    )
    ops, chat = config.alerts.webhooks
    assert (ops.format, ops.min_severity, ops.resolved_url()) == (
        "json",
        "critical",
        "http://127.0.0.1:9/x",
    )
    assert chat.resolved_url() == "https://hooks.example.com/services/SECRET"
    assert chat.url_file == tmp_path / "hook.url"
    assert [ops.wants(s) for s in ("info", "warning", "critical")] == [False, False, True]
    assert [chat.wants(s) for s in ("info", "warning", "critical")] == [True, True, True]


@pytest.mark.parametrize(
    ("hooks", "expected"),
    [
        ("    - {name: a, url: 'ftp://x/y'}\n", "must start with http:// or https://"),
        ("    - {name: a, url: 'http:///y'}\n", "has no host"),
        ("    - {name: a}\n", "exactly one of url and url_file"),
        ("    - {name: a, url: 'http://x', url_file: f}\n", "exactly one of url and url_file"),
        ("    - {name: a, url: 'http://x', format: teams}\n", "format"),
        ("    - {name: a, url: 'http://x', min_severity: fatal}\n", "min_severity"),
        ("    - {name: a, url: 'http://x', colour: red}\n", "colour"),
        ("    - {name: a, url: 'http://x'}\n    - {name: a, url: 'http://y'}\n", "duplicate"),
        ("    - {name: a, url_file: missing.url}\n", "file not found"),
    ],
)
def test_webhook_mistakes_are_reported_with_their_path(
    tmp_path: Path, hooks: str, expected: str
) -> None:
    found = problems(tmp_path, hooks)
    assert any(expected in p and p.startswith("alerts.webhooks") for p in found), found


def test_a_url_file_that_holds_no_url_fails_at_send_time(tmp_path: Path) -> None:
    (tmp_path / "hook.url").write_text("not a url\n")
    config = load_config(write(tmp_path, "    - {name: a, url_file: hook.url}\n"))
    with pytest.raises(ValueError, match="http"):
        config.alerts.webhooks[0].resolved_url()


TRANSITION = AlertTransition(
    rule="laser-down",
    machine="laser-01",
    zone="photonics",
    owner="acme",
    severity="critical",
    firing=True,
    value=120.0,
    message="laser-01 down for 120 s",
    ts_ms=T0,
    since_ms=T0 - 120_000,
)


def test_json_and_slack_bodies() -> None:
    p = payload("unit", TRANSITION)
    assert p == {
        "site": "unit",
        "rule": "laser-down",
        "machine": "laser-01",
        "zone": "photonics",
        "severity": "critical",
        "firing": True,
        "value": 120.0,
        "message": "laser-01 down for 120 s",
        "ts": "2026-11-27T00:00:00.000+00:00",
        "ts_ms": T0,
    }
    assert json.loads(payload_json("unit", TRANSITION)) == p
    assert json.loads(render("json", p)) == p
    assert json.loads(render("slack", p)) == {"text": slack_text(p)}
    assert slack_text(p) == (
        "[FIRING] critical laser-down on laser-01 (photonics): laser-01 down for 120 s"
        " (value 120, 2026-11-27T00:00:00.000+00:00)"
    )
    resolved = payload("unit", dataclasses.replace(TRANSITION, firing=False))
    assert slack_text(resolved).startswith("[RESOLVED] critical laser-down")


class Clock:
    def __init__(self) -> None:
        self.ms = T0

    def __call__(self) -> int:
        return self.ms


def test_each_transition_is_a_notification_row_in_the_same_commit(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        "    - {name: ops, url: 'http://127.0.0.1:9/', min_severity: warning}\n"
        "    - {name: chat, url: 'http://127.0.0.1:9/', format: slack}\n",
    )
    clock = Clock()
    gw = Gateway(load_config(path), clock_ms=clock, collectors=False)
    assert [n.name for n in gw.notifiers] == ["ops", "chat"]
    for s in range(0, 200, 10):
        clock.ms = T0 + s * 1000
        gw._on_sample(Sample("laser-01", clock.ms, {"state": "Stopped"}), None)
    assert gw.store.notifications_waiting() == 0  # staged, not yet committed
    gw.commit()
    for s in range(200, 230, 10):
        clock.ms = T0 + s * 1000
        gw._on_sample(Sample("laser-01", clock.ms, {"state": "Executing"}), None)
    gw.commit()
    gw.store.close()
    with Store(tmp_path / "gw.db") as store:
        rows = store._rows("SELECT channel, payload, attempts FROM notifications ORDER BY id", ())
    got = [(r["channel"], json.loads(r["payload"])["firing"], r["attempts"]) for r in rows]
    # critical laser-down fired then resolved: both channels; nothing info-level fired
    assert sorted(got) == sorted(
        [("ops", True, 0), ("chat", True, 0), ("ops", False, 0), ("chat", False, 0)]
    )
    assert [json.loads(r["payload"])["rule"] for r in rows] == ["laser-down"] * 4
