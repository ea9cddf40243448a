"""Alert notifications without a network: the grouped payload and its text renderings (Slack,
mail, MQTT), the rows the gateway commits, and the sender's retry policy driven step by step
with a scripted channel (delivery over real HTTP, SMTP and MQTT is in tests/integration)."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import random
import textwrap
from pathlib import Path
from typing import Any

import pytest
import yaml
from structlog.testing import capture_logs
from tests.fakes import T0, Clock
from tests.sites import machine_config, site_yaml

from pilotline.gateway.config import EmailConfig, load_config
from pilotline.gateway.notify import (
    DeliveryError,
    NotificationSender,
    make_senders,
    notification_json,
    notification_payload,
    notification_rows,
)
from pilotline.gateway.notify.email.channel import EmailChannel, body, message, subject
from pilotline.gateway.notify.mqtt.channel import MqttChannel, messages
from pilotline.gateway.notify.payload import dumps, iso, upgrade
from pilotline.gateway.notify.webhook.channel import WebhookChannel, render, slack_text
from pilotline.gateway.service import Gateway
from pilotline.gateway.store import Store
from pilotline.rules import Sample
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch import Notification

DOWN = AlertTransition(
    rule="machine-down",
    machine="laser-01",
    zone="photonics",
    owner="acme",
    severity="critical",
    firing=True,
    value=120.0,
    message="laser-01 down for 120 s",
    ts_ms=T0 + 120_000,
    since_ms=T0,
)


def legacy_payload(site: str, t: AlertTransition) -> dict[str, Any]:
    """The per-transition row of gateways from before grouping, as they wrote it: what
    ``upgrade`` must read from a queue such a gateway left."""
    return {
        "site": site,
        "rule": t.rule,
        "machine": t.machine,
        "zone": t.zone,
        "severity": t.severity,
        "firing": t.firing,
        "value": t.value,
        "message": t.message,
        "ts": iso(t.ts_ms),
        "ts_ms": t.ts_ms,
    }


def alert(machine: str, *, firing: bool = True, value: float = 120.0) -> AlertTransition:
    return dataclasses.replace(
        DOWN, machine=machine, firing=firing, value=value, message=f"{machine} down"
    )


def grouped(*alerts: AlertTransition, kind: str = "firing", channel: str = "ops") -> Notification:
    return Notification(
        channel=channel,
        group=(("rule", "machine-down"), ("zone", "photonics")),
        kind=kind,  # type: ignore[arg-type]
        ts_ms=T0 + 150_000,
        alerts=alerts,
    )


def test_the_payload_of_a_grouped_notification() -> None:
    n = grouped(DOWN, alert("laser-02"), alert("laser-03", firing=False, value=300.0))
    p = notification_payload("marseille-pilot", n)
    assert {k: v for k, v in p.items() if k != "alerts"} == {
        "site": "marseille-pilot",
        "channel": "ops",
        "kind": "firing",
        "group": {"rule": "machine-down", "zone": "photonics"},
        "ts": "2026-11-27T00:02:30.000+00:00",
        "ts_ms": T0 + 150_000,
        "counts": {"firing": 2, "resolved": 1},
    }
    assert p["alerts"][0] == {
        "rule": "machine-down",
        "machine": "laser-01",
        "zone": "photonics",
        "owner": "acme",
        "severity": "critical",
        "status": "firing",
        "firing": True,
        "value": 120.0,
        "message": "laser-01 down for 120 s",
        "ts": "2026-11-27T00:02:00.000+00:00",
        "ts_ms": T0 + 120_000,
        "since": "2026-11-27T00:00:00.000+00:00",
        "since_ms": T0,
    }
    assert [(a["machine"], a["status"]) for a in p["alerts"]] == [
        ("laser-01", "firing"), ("laser-02", "firing"), ("laser-03", "resolved")
    ]
    text = notification_json("marseille-pilot", n)
    assert json.loads(text) == p
    assert text == json.dumps(p, sort_keys=True, separators=(",", ":"))  # stable text
    assert list(json.loads(text)) == sorted(p)


def test_a_value_that_is_not_a_number_is_null_not_invalid_json() -> None:
    text = notification_json("s", grouped(alert("m", value=float("nan"))))
    assert "NaN" not in text
    assert json.loads(text)["alerts"][0]["value"] is None


def test_rows_are_one_per_notification_and_channel() -> None:
    a = grouped(DOWN, channel="ops")
    b = grouped(DOWN, channel="mail")
    rows = notification_rows("s", [a, b])
    assert [c for c, _ in rows] == ["ops", "mail"]
    assert json.loads(rows[1][1]) == notification_payload("s", b)


def test_slack_text_has_a_title_and_one_line_per_alert() -> None:
    p = notification_payload("s", grouped(DOWN, alert("laser-02"), alert("laser-03")))
    lines = slack_text(p).split("\n")
    assert lines[0] == "[FIRING:3] machine-down photonics"
    assert lines[1] == (
        "FIRING critical machine-down on laser-01 (photonics): laser-01 down for 120 s"
        " (value 120, at 2026-11-27T00:02:00.000+00:00)"
    )
    assert len(lines) == 4
    assert json.loads(render("slack", p)) == {"text": slack_text(p)}
    assert json.loads(render("json", p)) == p

    resolved = notification_payload("s", grouped(alert("m1", firing=False), kind="resolved"))
    assert slack_text(resolved).split("\n")[0] == "[RESOLVED] machine-down photonics"
    assert slack_text(resolved).split("\n")[1].startswith("RESOLVED critical machine-down on m1")
    repeat = notification_payload("s", grouped(DOWN, kind="repeat"))
    assert slack_text(repeat).startswith("[FIRING:1] machine-down photonics (reminder)\n")
    ungrouped = notification_payload("s", dataclasses.replace(grouped(DOWN), group=()))
    assert slack_text(ungrouped).startswith("[FIRING:1] all alerts\n")


def test_a_huge_group_is_summarised_in_text_but_complete_in_json() -> None:
    n = grouped(*(alert(f"m{i:03d}") for i in range(130)))
    p = notification_payload("s", n)
    lines = slack_text(p).split("\n")
    assert lines[0] == "[FIRING:130] machine-down photonics"
    assert len(lines) == 1 + 100 + 1
    assert lines[-1] == "... and 30 more (GET /api/alerts on the gateway)"
    assert len(json.loads(render("json", p))["alerts"]) == 130
    assert body(p).count("FIRING critical machine-down on") == 130  # mail lists them all


MAIL = EmailConfig.model_validate(
    {
        "name": "oncall",
        "host": "127.0.0.1",
        "from": "Pilotline <alerts@example.com>",
        "to": ["ops@example.com", "night@example.com"],
    }
)


def test_the_mail_of_a_notification() -> None:
    p = notification_payload("marseille-pilot", grouped(DOWN, alert("laser-02")))
    assert subject(p) == "[pilotline marseille-pilot] FIRING:2 machine-down photonics"
    msg = message(MAIL, p)
    assert msg["Subject"] == subject(p)
    assert msg["From"] == "Pilotline <alerts@example.com>"
    assert msg["To"] == "ops@example.com, night@example.com"
    assert msg["Auto-Submitted"] == "auto-generated"
    text = msg.get_content()
    assert text.startswith("[FIRING:2] machine-down photonics\n\nFIRING critical machine-down")
    assert "group: rule=machine-down, zone=photonics" in text
    assert "firing: 2, resolved: 0" in text
    # the same notification sent again has the same id; another one has another
    assert message(MAIL, p)["Message-ID"] == msg["Message-ID"]
    other = notification_payload("marseille-pilot", grouped(DOWN))
    assert message(MAIL, other)["Message-ID"] != msg["Message-ID"]
    resolved = notification_payload("marseille-pilot", grouped(alert("m", firing=False)))
    assert subject(resolved) == "[pilotline marseille-pilot] RESOLVED machine-down photonics"


def test_the_mqtt_messages_of_a_notification() -> None:
    p = notification_payload("s", grouped(DOWN, alert("laser-02", firing=False)))
    out = messages("pilotline/s/alerts", p)
    assert [(topic, retain) for topic, _, retain in out] == [
        ("pilotline/s/alerts/state/machine-down/laser-01", True),
        ("pilotline/s/alerts/state/machine-down/laser-02", True),
        ("pilotline/s/alerts/notifications", False),
    ]
    assert json.loads(out[0][1]) == {
        "site": "s",
        "rule": "machine-down",
        "machine": "laser-01",
        "zone": "photonics",
        "severity": "critical",
        "status": "firing",
        "value": 120.0,
        "message": "laser-01 down for 120 s",
        "since": "2026-11-27T00:00:00.000+00:00",
        "since_ms": T0,
        "ts": "2026-11-27T00:02:00.000+00:00",
        "ts_ms": T0 + 120_000,
    }
    assert json.loads(out[1][1])["status"] == "resolved"
    assert json.loads(out[2][1]) == p


def test_a_name_that_is_not_an_id_stays_one_topic_level() -> None:
    # A collector alert's "machine" is the collector's name, an endpoint URL.
    collector = dataclasses.replace(DOWN, rule="collector-down", machine="opcua:opc.tcp://h:4840")
    odd = dataclasses.replace(DOWN, machine="a+b#c%d")
    out = messages("p", notification_payload("s", grouped(collector, odd)))
    assert [topic for topic, _, _ in out] == [
        "p/state/collector-down/opcua:opc.tcp:%2F%2Fh:4840",
        "p/state/machine-down/a%2Bb%23c%25d",
        "p/notifications",
    ]
    assert json.loads(out[0][1])["machine"] == "opcua:opc.tcp://h:4840"  # as it is, in JSON


def test_a_row_from_before_grouping_is_delivered_as_a_notification_of_one_alert() -> None:
    legacy = json.loads(dumps(legacy_payload("s", DOWN)))
    assert "alerts" not in legacy
    p = upgrade("ops", legacy)
    assert (p["channel"], p["kind"], p["group"], p["counts"]) == (
        "ops", "firing", {"rule": "machine-down", "machine": "laser-01"},
        {"firing": 1, "resolved": 0},
    )
    assert slack_text(p).split("\n")[0] == "[FIRING:1] machine-down laser-01"
    assert p["alerts"][0]["message"] == "laser-01 down for 120 s"
    resolved = upgrade("ops", json.loads(dumps(legacy_payload("s", alert("m", firing=False)))))
    assert (resolved["kind"], resolved["alerts"][0]["status"]) == ("resolved", "resolved")
    grouped_row = notification_payload("s", grouped(DOWN))
    assert upgrade("ops", grouped_row) is grouped_row


# --------------------------------------------------------------------------- the sender


class Scripted:
    """A channel whose deliveries fail with the scripted errors, then succeed."""

    kind = "test"

    def __init__(self, name: str, *errors: Exception) -> None:
        self.name = name
        self.errors = list(errors)
        self.delivered: list[dict[str, Any]] = []
        self.attempts = 0
        self.closed = False

    def deliver(self, payload: dict[str, Any]) -> None:
        self.attempts += 1
        if self.errors:
            raise self.errors.pop(0)
        self.delivered.append(payload)

    def close(self) -> None:
        self.closed = True


def sender_for(
    tmp_path: Path, channel: Scripted, *notifications: Notification
) -> tuple[NotificationSender, Store, Clock]:
    store = Store(tmp_path / "gw.db")
    store.commit(now_ms=T0, notifications=notification_rows("s", notifications))
    clock = Clock()
    sender = NotificationSender(
        store, channel, backoff_base_s=1.0, backoff_cap_s=300.0, clock=clock.seconds,
        rng=random.Random(7),
    )
    return sender, store, clock


async def test_transient_failures_back_off_with_full_jitter(tmp_path: Path) -> None:
    channel = Scripted("ops", *(DeliveryError("HTTP 503", 503) for _ in range(10)))
    sender, store, clock = sender_for(tmp_path, channel, grouped(DOWN, channel="ops"))
    delays = []
    with capture_logs() as logs:
        for attempts in range(10):
            delay = await sender._step()
            assert delay is not None
            assert 0 <= delay <= min(300.0, 2**attempts)
            delays.append(delay)
            assert await sender._step() == pytest.approx(delay, abs=0.002)  # not yet due
            clock.ms += round(delay * 1000) + 2  # next_ms is rounded to the millisecond
        assert await sender._step() == 0.0  # the 11th attempt goes through
    assert len(set(delays)) == 10  # jittered
    assert max(delays) > 8  # and growing
    assert [e["event"] for e in logs] == ["notify.failed"] * 10 + ["notify.sent"]
    assert logs[0]["status"] == 503
    assert logs[-1]["attempts"] == 11
    assert sender.counts == {("ops", "failed"): 10, ("ops", "sent"): 1}
    assert store.notifications_waiting() == 0
    assert channel.delivered[0]["alerts"][0]["machine"] == "laser-01"
    store.close()


async def test_a_permanent_refusal_is_kept_retried_at_the_cap_and_reported_once(
    tmp_path: Path,
) -> None:
    refusals = [DeliveryError("SMTP 535: bad credentials", 535, permanent=True) for _ in range(3)]
    channel = Scripted("mail", *refusals)
    sender, store, clock = sender_for(
        tmp_path, channel, grouped(DOWN, channel="mail"), grouped(alert("x"), channel="mail")
    )
    with capture_logs() as logs:
        for _ in range(3):
            delay = await sender._step()
            assert delay is not None
            assert 150.0 <= delay <= 300.0  # capped from the first refusal on
            clock.ms += round(delay * 1000) + 2  # next_ms is rounded to the millisecond
        assert await sender._step() == 0.0
        assert await sender._step() == 0.0  # the next row, which waited behind
    events = [e["event"] for e in logs]
    assert events == ["notify.rejected", "notify.failed", "notify.failed", "notify.sent",
                      "notify.sent"]
    rejected = logs[0]
    assert (rejected["status"], rejected["error"], rejected["log_level"]) == (
        535, "SMTP 535: bad credentials", "error"
    )
    assert [p["alerts"][0]["machine"] for p in channel.delivered] == ["laser-01", "x"]
    assert store.notifications_waiting() == 0
    store.close()


async def test_backoff_never_overflows_however_many_attempts(tmp_path: Path) -> None:
    channel = Scripted("ops", DeliveryError("down"))
    sender, store, _ = sender_for(tmp_path, channel, grouped(DOWN))
    row = store.notification_next("ops")
    assert row is not None
    with capture_logs():
        delay = sender._failed(row[0], 5000, DeliveryError("down"))
    assert 0 <= delay <= 300.0
    store.close()


async def test_an_unreadable_row_is_a_permanent_refusal_not_a_crash(tmp_path: Path) -> None:
    channel = Scripted("ops")
    store = Store(tmp_path / "gw.db")
    store.commit(now_ms=T0, notifications=[("ops", "{not json"), ("ops", "[1, 2]")])
    sender = NotificationSender(store, channel, clock=Clock().seconds)
    with capture_logs() as logs:
        delay = await sender._step()
    assert delay is not None
    assert delay >= sender.backoff_cap_s / 2
    assert channel.attempts == 0
    assert logs[0]["event"] == "notify.rejected"
    assert logs[0]["error"].startswith("unreadable row: JSONDecodeError")
    store.close()


async def test_rows_go_oldest_first_and_the_channel_is_closed_on_stop(tmp_path: Path) -> None:
    channel = Scripted("ops")
    sender, store, _ = sender_for(
        tmp_path,
        channel,
        grouped(DOWN, kind="firing"),
        grouped(alert("laser-01", firing=False), kind="resolved"),
    )
    task = asyncio.create_task(sender.run())
    for _ in range(200):
        if len(channel.delivered) == 2:
            break
        await asyncio.sleep(0.01)
    task.cancel()
    await asyncio.gather(task, return_exceptions=True)
    assert [p["kind"] for p in channel.delivered] == ["firing", "resolved"]
    assert channel.closed
    store.close()


# --------------------------------------------------------------------------- the gateway's side

RULES = [
    {"name": "laser-down", "severity": "critical", "state": "down", "for": "2m",
     "message": "{machine} down for {value:.0f} s"},
    {"name": "laser-idle", "severity": "info", "state": "idle", "for": "1m"},
]


def write(tmp_path: Path, channels: str) -> Path:
    """The site of laser-01 with ``RULES``; ``channels`` is the YAML of the channel keys
    under ``alerts:``, indented as they stand there."""
    path = tmp_path / "site.yaml"
    text = site_yaml(
        {"photonics": [machine_config("laser-01")]},
        influx=None,
        store=tmp_path / "gw.db",
        alerts={"rules": RULES, **yaml.safe_load(textwrap.dedent(channels))},
    )
    path.write_text(text, encoding="utf-8")
    return path


def test_one_sender_per_channel_of_every_kind(tmp_path: Path) -> None:
    config = load_config(
        write(
            tmp_path,
            "  webhooks:\n    - {name: ops, url: 'http://127.0.0.1:9/'}\n"
            "  email:\n    - {name: mail, host: 127.0.0.1, from: a@example.com, to: [b@x.org]}\n"
            "  mqtt:\n    - {name: panel}\n",
        )
    )
    store = Store(tmp_path / "gw.db")
    senders = make_senders(config, store)
    assert [(s.name, type(s.channel)) for s in senders] == [
        ("ops", WebhookChannel), ("mail", EmailChannel), ("panel", MqttChannel)
    ]
    assert senders[0].counts is not senders[1].counts  # none given: each its own
    mqtt = senders[2].channel
    assert isinstance(mqtt, MqttChannel)
    assert (mqtt.prefix, mqtt.client_id) == ("pilotline/unit/alerts", "pilotline-unit-alerts-panel")
    store.close()


def test_alert_notifications_are_rows_committed_by_the_gateway(tmp_path: Path) -> None:
    # Running on for 15 minutes after the resolution lets any grouping delay pass.
    path = write(
        tmp_path,
        "  webhooks:\n"
        "    - {name: ops, url: 'http://127.0.0.1:9/', min_severity: warning}\n"
        "    - {name: chat, url: 'http://127.0.0.1:9/', format: slack}\n",
    )
    clock = Clock()
    gw = Gateway(load_config(path), clock_ms=clock, collectors=False)
    assert [n.name for n in gw.notifiers] == ["ops", "chat"]
    for s in range(0, 200, 10):
        clock.ms = T0 + s * 1000
        gw.ingest.sample(Sample("laser-01", clock.ms, {"state": "Stopped"}), None)
    assert gw.store.notifications_waiting() == 0  # staged, not yet committed
    gw.commit()
    for s in range(200, 1100, 10):
        clock.ms = T0 + s * 1000
        gw.ingest.sample(Sample("laser-01", clock.ms, {"state": "Executing"}), None)
        gw.tick()  # the rules timer: grouped notifications are flushed on it
        gw.commit()
    gw.store.close()
    with Store(tmp_path / "gw.db") as store:
        rows = store._rows("SELECT channel, payload, attempts FROM notifications ORDER BY id", ())
    got = [(r["channel"], upgrade(r["channel"], json.loads(r["payload"]))) for r in rows]
    # critical laser-down fired then resolved: both channels; nothing info-level fired
    assert sorted((c, p["kind"]) for c, p in got) == sorted(
        [("ops", "firing"), ("chat", "firing"), ("ops", "resolved"), ("chat", "resolved")]
    )
    assert {a["rule"] for _, p in got for a in p["alerts"]} == {"laser-down"}
