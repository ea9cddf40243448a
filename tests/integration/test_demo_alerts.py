"""Issue 4's "done when", in the demo itself: a fault on a machine produces one alert on each
configured channel within the rule's ``for:`` (plus ``group_wait``), its clearing produces one
resolved notification, and a zone-wide outage produces one grouped message per channel.

``pilotline demo`` runs as a subprocess with its staged incidents moved early; what the
operator receives is read from its inbox file (demo/inbox.py: a real SMTP server, a real
HTTP server and an MQTT subscriber on the demo's Mosquitto). The quick tests before it check
the two parts the demo adds: the inbox's MQTT receiver, and the OPC UA server reporting a
machine it has lost as Bad_NoCommunication.
"""

from __future__ import annotations

import asyncio
import json
import re
import subprocess
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

import paho.mqtt.client as mqtt
import pytest
from asyncua import ua
from paho.mqtt.enums import CallbackAPIVersion
from tests.process import pilotline_command

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.demo.inbox import Inbox
from pilotline.demo.opcua_server import DemoServer
from pilotline.demo.plant import Incident, Plant
from pilotline.demo.publisher import publish_timeline
from pilotline.demo.run import FAULT_MACHINE, OUTAGE_ZONE
from pilotline.demo.site import ALERT_RULES
from pilotline.gateway.notify.mqtt.channel import messages
from pilotline.gateway.notify.payload import notification_payload
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch import Notification

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

CHANNELS = {"webhook", "mail", "mqtt"}
DEBOUNCE_S = 5  # the demo's defaults.debounce_s
STALE_S = 15  # the demo's defaults.stale_after_s
GROUP_WAIT_S = 10  # the demo's alerts.group_wait
SLACK_S = 10  # publish ticks, OPC UA publishing, a busy 2-core machine
FOR_S = {r["name"]: int(str(r["for"]).removesuffix("s")) for r in ALERT_RULES if "for" in r}
PREFIX = "pilotline/demo-pilot/alerts"


# --------------------------------------------------------------------------- reading the inbox


def alerts_in(record: dict[str, Any]) -> list[tuple[str, str, str]]:
    """(rule, machine, status) of each alert a received notification carries, whatever the
    channel: a JSON notification (its ``alerts``, or one transition at the top level), or a
    mail's alert lines (``FIRING critical machine-down on laser-cut-01 (photonics): ...``)."""
    body = record["body"]
    if isinstance(body, dict):
        items = body["alerts"] if isinstance(body.get("alerts"), list) else [body]
        return [
            (a["rule"], a["machine"], "firing" if a.get("firing") else "resolved") for a in items
        ]
    found = re.findall(r"^(FIRING|RESOLVED) \w+ (\S+) on (\S+) \(", str(body), re.MULTILINE)
    return [(rule, machine, status.lower()) for status, rule, machine in found]


def summary(records: list[dict[str, Any]], start_ms: int) -> str:
    lines = [
        f"  +{(r['received_ms'] - start_ms) / 1000:6.1f}s {r['channel_kind']:7} "
        f"{r['kind']}: {r['subject']} {sorted({m for _, m, _ in alerts_in(r)})}"
        for r in records
    ]
    return "inbox:\n" + ("\n".join(lines) or "  (empty)")


# --------------------------------------------------------------------------- quick parts


def transition(machine: str) -> AlertTransition:
    return AlertTransition(
        "machine-offline", machine, "imaging", "visiotech", "warning", True, 1.0, "gone", 0, 0
    )


async def test_inbox_takes_mqtt_notifications_and_skips_retained_ones(tmp_path: Path) -> None:
    with MosquittoBroker(persistence=False) as broker:
        # a notification retained on the broker from before (an earlier demo run) is old news
        old = mqtt.Client(CallbackAPIVersion.VERSION2, client_id="old-run")
        old.connect("127.0.0.1", broker.port)
        old.loop_start()
        old.publish(f"{PREFIX}/notifications", b'{"kind":"firing"}', qos=1, retain=True)
        await asyncio.sleep(0.5)
        old.disconnect()
        old.loop_stop()

        async with Inbox(tmp_path / "inbox.jsonl", mqtt_url=broker.url) as inbox:
            note = Notification(
                channel="ops-mqtt",
                group=(("rule", "machine-offline"), ("zone", "imaging")),
                kind="firing",
                ts_ms=0,
                alerts=(transition("aoi-cam-01"), transition("bonder-02")),
            )
            # what the gateway's MQTT channel publishes: retained states, then the message
            sent = [(t, b) for t, b, _retain in messages(PREFIX, notification_payload("x", note))]
            assert len(sent) == 3
            await asyncio.to_thread(publish_timeline, broker.url, sent)
            deadline = time.monotonic() + 10
            while not inbox.arrivals and time.monotonic() < deadline:
                await asyncio.sleep(0.05)
            await asyncio.sleep(0.5)  # anything else would have come by now
    assert [(a.channel_kind, a.channel, a.kind, a.alerts) for a in inbox.arrivals] == [
        ("mqtt", "ops-mqtt", "firing", 2)
    ]
    assert inbox.arrivals[0].source == f"{PREFIX}/notifications"
    assert inbox.arrivals[0].subject == "[FIRING:2] machine-offline imaging"


async def test_demo_opcua_server_reports_a_lost_machine_as_bad() -> None:
    now = time.time_ns() // 1_000_000
    outage = Incident("imaging", "offline", now + 60_000, now + 120_000)
    demo = DemoServer(free_port(), incidents=[outage])
    await demo.setup()
    state = demo.values[("bonder-01", "state")]  # the OPC UA machine of the imaging zone
    await demo.update(now)
    assert (await state.read_data_value(raise_on_bad_status=False)).StatusCode.is_good()
    await demo.update(now + 61_000)
    lost = await state.read_data_value(raise_on_bad_status=False)
    assert lost.StatusCode.value == ua.StatusCodes.BadNoCommunication
    other = await demo.values[("laser-cut-01", "state")].read_data_value()
    assert other.StatusCode.is_good()  # photonics has power
    await demo.update(now + 121_000)
    back = await state.read_data_value(raise_on_bad_status=False)
    assert back.StatusCode.is_good()  # power is back after the outage


# --------------------------------------------------------------------------- the demo


FAULT_AT_S, FAULT_FOR_S = 15, 45
OUTAGE_AT_S, OUTAGE_FOR_S = 25, 60
DURATION_S = 95  # the fault's resolution, after group_interval (30 s), with room to spare


def calm(seed: int, seconds: int) -> dict[str, str]:
    """Machines the simulation itself takes down or offline in the demo's first ``seconds``
    (MQTT line: started an hour before the demo; OPC UA server: at the demo's start), which
    would add alerts the assertions below do not expect."""
    unplanned: dict[str, str] = {}
    for plant, origin_s in (
        (Plant(seed=seed, start_ms=0), 3600),
        (Plant(seed=seed, start_ms=0), 0),
    ):
        for s in range(origin_s, origin_s + seconds):
            plant.payloads(s * 1000)
            for m in plant.machines:
                if plant.true_state(m.id) in ("down", "offline"):
                    unplanned.setdefault(m.id, f"{plant.true_state(m.id)} at +{s - origin_s} s")
    return unplanned


def test_demo_fault_and_zone_outage_reach_every_channel_once(tmp_path: Path) -> None:
    seed = 7
    assert calm(seed, DURATION_S + 10) == {}, "the seed's own faults would blur the count"
    port = free_port()
    workdir = tmp_path / "demo"
    out_path, err_path = tmp_path / "demo.stdout", tmp_path / "demo.stderr"
    with out_path.open("wb") as out, err_path.open("wb") as err:
        proc = subprocess.Popen(
            [
                *pilotline_command(),
                "demo",
                "--no-live",
                "--duration",
                str(DURATION_S),
                "--api",
                f"127.0.0.1:{port}",
                "--workdir",
                str(workdir),
                "--seed",
                str(seed),
                "--fault-at",
                str(FAULT_AT_S),
                "--fault-for",
                str(FAULT_FOR_S),
                "--outage-at",
                str(OUTAGE_AT_S),
                "--outage-for",
                str(OUTAGE_FOR_S),
            ],
            cwd=tmp_path,
            stdin=subprocess.DEVNULL,
            stdout=out,
            stderr=err,
        )
    try:
        code = proc.wait(timeout=DURATION_S + 40)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait(timeout=10)
    stdout = out_path.read_text()
    print(stdout)
    assert code == 0, err_path.read_text()[-3000:]
    inbox_path = workdir / "inbox.jsonl"
    assert f"arrive in {inbox_path}" in stdout
    # the demo's own clock: the incidents it staged, in epoch ms, as it logged them
    (started,) = [
        json.loads(line)
        for line in err_path.read_text().splitlines()
        if line.startswith("{") and json.loads(line)["event"] == "demo.started"
    ]
    staged_fault, staged_outage = (Incident.parse(text) for text in started["incidents"])
    assert (staged_fault.target, staged_fault.state) == (FAULT_MACHINE, "down")
    assert (staged_outage.target, staged_outage.state) == (OUTAGE_ZONE, "offline")
    assert staged_fault.end_ms - staged_fault.start_ms == FAULT_FOR_S * 1000
    start_ms = staged_fault.start_ms - FAULT_AT_S * 1000
    assert staged_outage.start_ms - start_ms == OUTAGE_AT_S * 1000
    records = [json.loads(line) for line in inbox_path.read_text().splitlines()]
    report = summary(records, start_ms)
    print(report)
    assert {r["channel_kind"] for r in records} == CHANNELS, report
    for r in records:  # the console showed each arrival
        assert f"{r['channel_kind']} {r['channel']}: {r['subject']}" in stdout, r

    by_channel: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in records:
        by_channel[r["channel_kind"]].append(r)
    imaging = {m.id for m in Plant().machines if m.zone == OUTAGE_ZONE}
    fault_for = FOR_S["machine-down"]
    offline_for = FOR_S["machine-offline"]
    expected = {("machine-down", FAULT_MACHINE)} | {("machine-offline", m) for m in imaging}
    for channel in sorted(CHANNELS):
        got = by_channel[channel]
        for r in got:  # nothing else: no start-up offline alert, no seed's own fault
            assert {(rule, m) for rule, m, _ in alerts_in(r)} <= expected, (channel, report)
        t = [(r["received_ms"] - start_ms) / 1000 for r in got]  # s since the demo's start

        # the fault: one firing message, about that machine alone, after for: and in time
        fault = [i for i, r in enumerate(got) if ("machine-down", FAULT_MACHINE) in
                 {(rule, m) for rule, m, _ in alerts_in(r)}]  # fmt: skip
        firing = [i for i in fault if got[i]["kind"] == "firing"]
        resolved = [i for i in fault if got[i]["kind"] == "resolved"]
        assert len(firing) == 1, (channel, report)
        assert [got[i]["kind"] for i in fault] == ["firing", "resolved"], (channel, report)
        (fi,), (ri,) = firing, resolved
        assert alerts_in(got[fi]) == [("machine-down", FAULT_MACHINE, "firing")], report
        assert got[fi]["alerts"] == 1
        assert FAULT_AT_S + fault_for <= t[fi], (channel, "before for:", report)
        deadline = FAULT_AT_S + DEBOUNCE_S + fault_for + GROUP_WAIT_S + SLACK_S
        assert t[fi] <= deadline, (channel, "late", report)
        # its clearing: one resolved message, after the fault ended
        assert alerts_in(got[ri]) == [("machine-down", FAULT_MACHINE, "resolved")], report
        assert t[ri] >= FAULT_AT_S + FAULT_FOR_S, (channel, report)

        # the zone outage: one grouped message holding every machine of the zone
        outage = [
            i for i, r in enumerate(got)
            if r["kind"] == "firing"
            and any(rule == "machine-offline" and m in imaging for rule, m, _ in alerts_in(r))
        ]  # fmt: skip
        assert len(outage) == 1, (channel, "one grouped message", report)
        (oi,) = outage
        assert {m for _, m, _ in alerts_in(got[oi])} == imaging, (channel, report)
        assert {(rule, s) for rule, _, s in alerts_in(got[oi])} == {("machine-offline", "firing")}
        assert got[oi]["alerts"] == len(imaging), (channel, report)
        assert OUTAGE_AT_S + STALE_S + offline_for <= t[oi], (channel, report)
        assert t[oi] <= OUTAGE_AT_S + STALE_S + offline_for + GROUP_WAIT_S + SLACK_S, report
