"""The demo's operator inbox, its staged incidents and its alerts section.

The inbox is fed by the gateway's real channel code (``gateway/notify``: the webhook POST
and the SMTP submission) over loopback, so a change in either side's format shows here.
The MQTT receiver needs a broker: tests/integration/test_demo_alerts.py.
"""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from pathlib import Path
from typing import Any

import pytest
import yaml
from tests.fakes import T0

from pilotline.demo.inbox import Arrival, Inbox, describe_json, describe_subject
from pilotline.demo.plant import Incident, Plant
from pilotline.demo.site import ALERT_RULES, AlertChannels, demo_site_yaml
from pilotline.gateway.config import EmailConfig, load_config
from pilotline.gateway.notify.email import channel as smtp
from pilotline.gateway.notify.payload import notification_payload
from pilotline.gateway.notify.webhook import channel as webhook
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch import Notification

SECOND = 1_000


def transition(machine: str, *, firing: bool = True, zone: str = "imaging") -> AlertTransition:
    return AlertTransition(
        rule="machine-offline",
        machine=machine,
        zone=zone,
        owner="visiotech",
        severity="warning",
        firing=firing,
        value=1.0,
        message=f"{machine} ({zone}) has stopped reporting",
        ts_ms=T0 + 60 * SECOND,
        since_ms=T0,
    )


def grouped(kind: str, machines: list[str], *, firing: bool = True) -> dict[str, Any]:
    note = Notification(
        channel="ops",
        group=(("rule", "machine-offline"), ("zone", "imaging")),
        kind=kind,  # type: ignore[arg-type]
        ts_ms=T0 + 70 * SECOND,
        alerts=tuple(transition(m, firing=firing) for m in machines),
    )
    return notification_payload("demo-pilot", note)


# --------------------------------------------------------------------------- reading messages


def test_describe_the_gateways_grouped_json() -> None:
    assert describe_json(grouped("firing", ["aoi-cam-01", "aoi-cam-02", "bonder-01"])) == (
        "firing",
        3,
        "[FIRING:3] machine-offline imaging",
    )
    assert describe_json(grouped("resolved", ["aoi-cam-01"], firing=False)) == (
        "resolved",
        1,
        "[RESOLVED] machine-offline imaging",
    )
    assert describe_json(grouped("repeat", ["aoi-cam-01"]))[2].endswith("(reminder)")


def test_describe_other_shapes() -> None:
    one = {"rule": "machine-down", "zone": "photonics", "machine": "laser-cut-01", "firing": False}
    assert describe_json(one) == ("resolved", 1, "[RESOLVED:1] machine-down photonics laser-cut-01")
    slack = {"text": "[FIRING:2] machine-down photonics\nFIRING critical ..."}
    assert describe_json(slack) == ("firing", 2, "[FIRING:2] machine-down photonics")
    assert describe_json([1, 2]) == (None, None, "[1, 2]")
    assert describe_subject("[pilotline demo-pilot] FIRING:5 machine-offline imaging") == (
        "firing",
        5,
    )
    assert describe_subject("[pilotline demo-pilot] RESOLVED machine-down photonics") == (
        "resolved",
        None,
    )
    assert describe_subject("[pilotline x] FIRING:1 machine-down photonics (reminder)") == (
        "repeat",
        1,
    )
    assert describe_subject("hello") == (None, None)


# --------------------------------------------------------------------------- receivers


async def test_webhook_and_mail_from_the_real_channels_land_in_the_inbox(tmp_path: Path) -> None:
    path = tmp_path / "inbox.jsonl"
    path.write_text("a line from an earlier run\n")
    seen: list[Arrival] = []
    async with Inbox(path, mqtt_url=None, on_arrival=seen.append) as inbox:
        channels = inbox.channels
        assert channels.webhook_url.startswith("http://127.0.0.1:")
        assert channels.webhook_url.endswith("/hook/ops-webhook")
        assert path.read_text() == ""  # each run starts an empty inbox

        machines = ["aoi-cam-01", "aoi-cam-02", "aoi-cam-03", "bonder-01", "bonder-02"]
        p = grouped("firing", machines)
        status = await asyncio.to_thread(
            webhook.post, channels.webhook_url, webhook.render("json", p), 5.0
        )
        assert status == 200
        mail = EmailConfig.model_validate(
            {
                "name": "ops-mail",
                "host": channels.smtp_host,
                "port": channels.smtp_port,
                "starttls": False,
                "from": "pilotline@demo.local",
                "to": ["ops@demo.local"],
            }
        )
        resolved = grouped("resolved", ["aoi-cam-01"], firing=False)
        await asyncio.to_thread(smtp.send, mail, smtp.message(mail, resolved))

    assert [a.channel_kind for a in seen] == ["webhook", "mail"]
    hook, letter = seen
    assert (hook.channel, hook.kind, hook.alerts) == ("ops-webhook", "firing", 5)
    assert hook.subject == "[FIRING:5] machine-offline imaging"
    assert hook.source == "/hook/ops-webhook"
    assert hook.body == p
    assert (letter.channel, letter.kind, letter.alerts) == ("ops-mail", "resolved", 1)
    assert letter.subject == "[pilotline demo-pilot] RESOLVED machine-offline imaging"
    assert letter.source == "ops@demo.local"
    assert "RESOLVED warning machine-offline on aoi-cam-01 (imaging)" in letter.body
    assert hook.line() == "📨 webhook ops-webhook: [FIRING:5] machine-offline imaging"

    lines = [json.loads(line) for line in path.read_text().splitlines()]
    assert lines == [hook.record(), letter.record()]
    assert set(lines[0]) == {
        "channel_kind", "channel", "received_at", "received_ms", "kind", "subject", "alerts",
        "source", "body",
    }  # fmt: skip
    assert lines[0]["received_at"].endswith("+00:00")


async def test_webhook_receiver_refuses_what_is_not_a_post(tmp_path: Path) -> None:
    async with Inbox(tmp_path / "inbox.jsonl", mqtt_url=None) as inbox:
        url = inbox.channels.webhook_url

        def get() -> int:
            try:
                with urllib.request.urlopen(url, timeout=5) as response:
                    return int(response.status)
            except urllib.error.HTTPError as exc:
                exc.close()
                return exc.code

        assert await asyncio.to_thread(get) == 405
        # a body that is not JSON is still an arrival: the inbox shows what it was sent
        text = b"FIRING:1 machine-down photonics"
        assert await asyncio.to_thread(webhook.post, url, text, 5.0) == 200
    assert [(a.kind, a.alerts, a.body) for a in inbox.arrivals] == [("firing", 1, text.decode())]


async def test_inbox_channels_need_a_started_inbox(tmp_path: Path) -> None:
    inbox = Inbox(tmp_path / "inbox.jsonl", mqtt_url=None)
    with pytest.raises(RuntimeError, match="not started"):
        _ = inbox.channels
    await inbox.close()  # closing an inbox that never started is harmless


# --------------------------------------------------------------------------- incidents


def states(
    plant: Plant, seconds: int, keep: dict[int, list[tuple[str, bytes]]] | None = None
) -> dict[str, list[str]]:
    """True state of every machine each second from T0; ``keep``'s seconds get the payloads."""
    out: dict[str, list[str]] = {m.id: [] for m in plant.machines}
    for s in range(seconds):
        payloads = plant.payloads(T0 + s * SECOND)
        if keep is not None and s in keep:
            keep[s] = payloads
        for m in plant.machines:
            out[m.id].append(plant.true_state(m.id))
    return out


def test_incidents_lie_over_the_schedule_and_leave_it_unchanged() -> None:
    fault = Incident("laser-cut-01", "down", T0 + 30 * SECOND, T0 + 90 * SECOND)
    outage = Incident("imaging", "offline", T0 + 60 * SECOND, T0 + 120 * SECOND)
    staged = Plant(start_ms=T0, dropouts=False, incidents=[fault, outage])
    plain = Plant(start_ms=T0, dropouts=False)
    imaging = {m.id for m in staged.machines if m.zone == "imaging"}
    assert len(imaging) == 5

    seen: dict[int, list[tuple[str, bytes]]] = {10: [], 70: []}
    staged_states = states(staged, 200, seen)
    plain_states = states(plain, 200)
    for machine, got in staged_states.items():
        for s, state in enumerate(got):
            if machine == "laser-cut-01" and 30 <= s < 90:
                assert state == "down", (machine, s)
            elif machine in imaging and 60 <= s < 120:
                assert state == "offline", (machine, s)
            else:  # before, after, elsewhere: the machine's own life
                assert state == plain_states[machine][s], (machine, s)

    # what is published: nothing from the dark zone, the fault in the machine's own words
    during = {topic.split("/")[-2]: json.loads(body) for topic, body in seen[70]}
    assert imaging.isdisjoint(during)
    assert during["laser-cut-01"]["state"] == "OutOfService"
    assert during["laser-cut-01"]["power_w"] < 60
    before = {topic.split("/")[-2] for topic, _ in seen[10]}
    assert imaging <= before


def test_incident_text_form_and_checks() -> None:
    incident = Incident("imaging", "offline", T0, T0 + SECOND)
    assert str(incident) == f"offline:imaging:{T0}:{T0 + SECOND}"
    assert Incident.parse(str(incident)) == incident
    with pytest.raises(ValueError, match="down or offline"):
        Incident.parse(f"maintenance:imaging:{T0}:{T0 + 1}")
    with pytest.raises(ValueError, match="state:target"):
        Incident.parse("down:laser-cut-01")
    with pytest.raises(ValueError, match="ends before"):
        Incident("imaging", "offline", T0, T0)
    with pytest.raises(ValueError, match="no such machine or zone"):
        Plant(incidents=[Incident("nowhere", "offline", T0, T0 + 1)])
    with pytest.raises(ValueError, match="power only"):  # a power machine at fault reads idle
        Plant(incidents=[Incident("laser-cut-02", "down", T0, T0 + 1)])


# --------------------------------------------------------------------------- site alerts


def test_site_alerts_section_loads_and_points_at_the_inbox(tmp_path: Path) -> None:
    channels = AlertChannels("http://127.0.0.1:18080/hook/ops-webhook", 12525, "pilotline/x/alerts")
    text = demo_site_yaml(
        Plant(),
        mqtt_url="mqtt://127.0.0.1:1883",
        store=tmp_path / "d.db",
        api="127.0.0.1:8080",
        alerts=channels,
    )
    assert "alerts" not in yaml.safe_load(
        demo_site_yaml(Plant(), mqtt_url="mqtt://h:1", store=tmp_path / "d.db", api="h:1")
    )
    path = tmp_path / "site.yaml"
    path.write_text(text)
    config = load_config(path)
    alerts = config.alerts
    assert [r.name for r in alerts.rules] == [r["name"] for r in ALERT_RULES]
    assert [c.name for c in alerts.channels()] == ["ops-webhook", "ops-mail", "ops-mqtt"]
    assert all(c.min_severity == "warning" for c in alerts.channels())
    assert (alerts.group_by, alerts.group_wait, alerts.group_interval) == (
        ["rule", "zone"],
        10_000,
        30_000,
    )
    (hook,) = alerts.webhooks
    assert hook.url == channels.webhook_url
    (mail,) = alerts.email
    assert (mail.host, mail.smtp_port, mail.encrypted) == ("127.0.0.1", 12525, False)
    (mqtt,) = alerts.mqtt
    assert mqtt.prefix(config.site) == "pilotline/x/alerts"
    # the staged incidents trip these two, and for: is what the demo's timing assumes
    rules = {r["name"]: r for r in yaml.safe_load(text)["alerts"]["rules"]}
    assert rules["machine-down"]["state"] == "down"
    assert rules["machine-offline"]["state"] == "offline"
    assert {rules["machine-down"]["for"], rules["machine-offline"]["for"]} == {"20s"}
