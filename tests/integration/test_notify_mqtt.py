"""Alert notifications published to a REAL Mosquitto (started by the test) and read by a paho
subscriber: one message per notification on ``<prefix>/notifications``, each alert's current
state retained on ``<prefix>/state/<rule>/<machine>`` (a subscriber that comes later gets them
all at once), a broker down then back gets the notification exactly once, a group of 50
alerts is one notification message, owner names reach only a private channel, and refused
credentials are reported once and retried
until the password file is fixed."""

from __future__ import annotations

import asyncio
import dataclasses
import json
import shutil
import threading
from pathlib import Path
from typing import Any

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from structlog.testing import capture_logs
from tests.fakes import T0
from tests.waiting import run_until, wait_for

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.demo.broker import MosquittoBroker, find_mosquitto
from pilotline.gateway.config import AlertMqttConfig
from pilotline.gateway.notify import NotificationSender, notification_rows
from pilotline.gateway.notify.mqtt.channel import MqttChannel
from pilotline.gateway.store import Store
from pilotline.rules.alerts import AlertTransition
from pilotline.rules.dispatch import Notification

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

SITE = "marseille-pilot"
PREFIX = f"pilotline/{SITE}/alerts"


class Subscriber:
    """A paho client subscribed to ``<PREFIX>/#`` at QoS 1; ``persistent`` keeps its session
    (and the messages queued for it) on the broker while it is away."""

    def __init__(self, port: int, client_id: str, *, persistent: bool = False) -> None:
        self.messages: list[tuple[str, dict[str, Any], bool]] = []  # (topic, body, retain)
        self._subscribed = threading.Event()
        self.client = paho.Client(
            CallbackAPIVersion.VERSION2, client_id=client_id, protocol=paho.MQTTv5
        )
        self.client.on_connect = self._on_connect
        self.client.on_subscribe = lambda *_a: self._subscribed.set()
        self.client.on_message = self._on_message
        self.client.reconnect_delay_set(1, 1)
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = 3600 if persistent else 0
        self.client.connect("127.0.0.1", port, clean_start=not persistent, properties=props)
        self.client.loop_start()
        assert self._subscribed.wait(10), "not subscribed"

    def _on_connect(self, client: paho.Client, *_args: Any) -> None:
        client.subscribe(f"{PREFIX}/#", qos=1)

    def _on_message(self, _c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
        self.messages.append((msg.topic, json.loads(msg.payload), bool(msg.retain)))

    def on(self, suffix: str) -> list[dict[str, Any]]:
        return [body for topic, body, _ in self.messages if topic == f"{PREFIX}/{suffix}"]

    def states(self) -> dict[str, tuple[str, bool]]:
        """state topic suffix -> (status, retain flag) of the last message on it."""
        prefix = f"{PREFIX}/state/"
        return {
            topic.removeprefix(prefix): (body["status"], retain)
            for topic, body, retain in self.messages
            if topic.startswith(prefix)
        }

    def close(self) -> None:
        self.client.disconnect()
        self.client.loop_stop()


DOWN = AlertTransition(
    "machine-down", "laser-01", "photonics", "acme", "critical", True, 120.0,
    "laser-01 down for 120 s", T0 + 120_000, T0,
)


def notification(*alerts: AlertTransition, kind: str = "firing", ts_ms: int = T0) -> Notification:
    group = (("rule", "machine-down"), ("zone", "photonics"))
    return Notification("panel", group, kind, ts_ms, alerts)  # type: ignore[arg-type]


def channel(broker: MosquittoBroker, *, private: bool = False, **broker_extra: Any) -> MqttChannel:
    config = MqttBrokerConfig(url=broker.url, **broker_extra)
    return MqttChannel(AlertMqttConfig(name="panel", timeout_s=5, private=private), config, SITE)


def queue(tmp_path: Path, *notifications: Notification) -> Store:
    store = Store(tmp_path / "gw.db")
    store.commit(now_ms=T0, notifications=notification_rows(SITE, notifications))
    return store


async def test_one_message_per_notification_and_retained_states(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    laser02 = dataclasses.replace(DOWN, machine="laser-02", message="laser-02 down")
    resolved = dataclasses.replace(DOWN, firing=False, value=200.0, ts_ms=T0 + 200_000)
    store = queue(
        tmp_path,
        notification(DOWN, laser02),
        notification(resolved, kind="resolved", ts_ms=T0 + 200_000),
    )
    live = Subscriber(broker.port, "live")
    sender = NotificationSender(store, channel(broker))
    try:
        await run_until(sender, lambda: len(live.on("notifications")) == 2)
    finally:
        live.close()
    first, second = live.on("notifications")
    assert (first["kind"], first["counts"], first["site"]) == (
        "firing", {"firing": 2, "resolved": 0}, SITE
    )
    assert [a["machine"] for a in first["alerts"]] == ["laser-01", "laser-02"]
    assert (second["kind"], second["alerts"][0]["status"]) == ("resolved", "resolved")
    assert not any(retain for _, _, retain in live.messages)  # live deliveries
    assert [b["status"] for b in live.on("state/machine-down/laser-01")] == ["firing", "resolved"]
    assert sender.counts == {("panel", "sent"): 2}
    assert store.notifications_waiting() == 0

    late = Subscriber(broker.port, "late")  # connects after everything was published
    try:
        await wait_for(lambda: len(late.states()) == 2)
        await asyncio.sleep(0.3)
    finally:
        late.close()
    assert late.states() == {
        "machine-down/laser-01": ("resolved", True),
        "machine-down/laser-02": ("firing", True),
    }
    assert late.on("notifications") == []  # notifications are not retained
    (state,) = late.on("state/machine-down/laser-02")
    assert state == {
        "site": SITE,
        "rule": "machine-down",
        "machine": "laser-02",
        "zone": "photonics",
        "severity": "critical",
        "status": "firing",
        "value": 120.0,
        "message": "laser-02 down",
        "since": "2026-11-27T00:00:00.000+00:00",
        "since_ms": T0,
        "ts": "2026-11-27T00:02:00.000+00:00",
        "ts_ms": T0 + 120_000,
    }
    store.close()


async def test_a_broker_down_then_back_gets_the_notification_exactly_once(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    # A subscriber with a persistent session: the broker keeps what is published while it
    # reconnects, so every message that reached the broker is counted.
    subscriber = Subscriber(broker.port, "durable", persistent=True)
    store = queue(tmp_path, notification(DOWN))
    sender = NotificationSender(
        store, channel(broker), backoff_base_s=0.05, backoff_cap_s=0.3
    )
    task = asyncio.create_task(sender.run())
    try:
        with capture_logs() as logs:
            await wait_for(lambda: len(subscriber.on("notifications")) == 1)
            broker.stop()  # the channel's connection is lost with it
            resolved = dataclasses.replace(DOWN, firing=False, ts_ms=T0 + 200_000)
            store.commit(
                now_ms=T0,
                notifications=notification_rows(SITE, [notification(resolved, kind="resolved")]),
            )
            sender.notify()
            await wait_for(lambda: sender.counts[("panel", "failed")] >= 3)
            broker.start()
            await wait_for(lambda: len(subscriber.on("notifications")) == 2)
            await asyncio.sleep(0.5)
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        subscriber.close()
    assert [n["kind"] for n in subscriber.on("notifications")] == ["firing", "resolved"]
    assert sender.counts[("panel", "sent")] == 2
    failed = [e for e in logs if e["event"] == "notify.failed"]
    assert "Connection refused" in failed[-1]["error"]
    assert store.notifications_waiting() == 0
    store.close()


async def test_a_group_of_50_alerts_is_one_notification_message(
    tmp_path: Path, broker: MosquittoBroker
) -> None:
    alerts = tuple(dataclasses.replace(DOWN, machine=f"laser-{i:02d}") for i in range(50))
    store = queue(tmp_path, notification(*alerts))
    live = Subscriber(broker.port, "live")
    sender = NotificationSender(store, channel(broker))
    try:
        await run_until(sender, lambda: len(live.on("notifications")) == 1)
    finally:
        live.close()
    (message,) = live.on("notifications")
    assert message["counts"] == {"firing": 50, "resolved": 0}
    assert len(message["alerts"]) == 50
    assert sorted(live.states()) == [f"machine-down/laser-{i:02d}" for i in range(50)]
    assert len(live.messages) == 51
    store.close()


@pytest.mark.parametrize("private", [False, True])
async def test_owner_names_are_published_only_on_a_private_channel(
    tmp_path: Path, broker: MosquittoBroker, private: bool
) -> None:
    """Any client the broker lets subscribe reads these topics: unless the channel says its
    topics are private, no payload names whose machine it is (the alert's ``owner``, nor an
    ``owner`` group label)."""
    by_owner = Notification(
        "panel", (("owner", "acme"), ("rule", "machine-down")), "firing", T0, (DOWN,)
    )
    store = queue(tmp_path, by_owner)
    anyone = Subscriber(broker.port, f"anyone-{private}")
    sender = NotificationSender(store, channel(broker, private=private))
    try:
        await run_until(sender, lambda: len(anyone.on("notifications")) == 1)
    finally:
        anyone.close()
    (message,) = anyone.on("notifications")
    seen = [json.dumps(body) for _, body, _ in anyone.messages]
    assert len(seen) == 2  # the notification and the alert's state
    if private:
        assert message["alerts"][0]["owner"] == "acme"
        assert message["group"] == {"owner": "acme", "rule": "machine-down"}
    else:
        assert not any("acme" in text or "owner" in text for text in seen), seen
        assert message["group"] == {"rule": "machine-down"}
        assert message["alerts"][0]["machine"] == "laser-01"  # the rest is all there
    store.close()


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
async def test_refused_credentials_are_reported_once_and_retried_until_fixed(
    tmp_path: Path, passwd: Path
) -> None:
    b = MosquittoBroker()
    b.conf.write_text(
        b.conf.read_text().replace(
            "allow_anonymous true", f"allow_anonymous false\npassword_file {passwd}"
        )
    )
    secret = tmp_path / "mqtt.pw"
    secret.write_text("wrong\n")
    try:
        b.start()
        store = queue(tmp_path, notification(DOWN))
        sender = NotificationSender(
            store, channel(b, username="gw", password_file=secret), backoff_cap_s=0.2
        )
        task = asyncio.create_task(sender.run())
        try:
            with capture_logs() as logs:
                await wait_for(lambda: sender.counts[("panel", "failed")] >= 3)
                secret.write_text("s3cret\n")  # fixed without a restart
                await wait_for(lambda: sender.counts[("panel", "sent")] == 1)
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)
        events = [e["event"] for e in logs if e["event"].startswith("notify.")]
        assert events[0] == "notify.rejected"
        assert events.count("notify.rejected") == 1
        assert events[-1] == "notify.sent"
        assert logs[0]["status"] in (0x86, 0x87)  # bad user name or password / not authorized
        assert not any("s3cret" in str(e) or "wrong" in str(e) for e in logs)
        assert store.notifications_waiting() == 0
        store.close()
    finally:
        b.close()


async def test_publishes_the_broker_refuses_are_not_delivered(tmp_path: Path) -> None:
    # An ACL that lets anonymous clients read but not write the alert topics: Mosquitto
    # answers each QoS 1 publish with PUBACK "Not authorized", which is not a delivery.
    b = MosquittoBroker()
    acl = b.datadir / "acl"
    acl.write_text("topic read pilotline/#\n")
    acl.chmod(0o644)
    b.conf.write_text(b.conf.read_text() + f"acl_file {acl}\n")
    try:
        b.start()
        store = queue(tmp_path, notification(DOWN))
        sender = NotificationSender(store, channel(b), backoff_cap_s=0.2)
        with capture_logs() as logs:
            await run_until(sender, lambda: sender.counts[("panel", "failed")] >= 2, settle_s=0)
        rejected = [e for e in logs if e["event"] == "notify.rejected"]
        assert len(rejected) == 1
        assert rejected[0]["status"] == 0x87
        assert "refused 2 of 2 messages" in rejected[0]["error"]
        assert store.notifications_waiting() == 1  # kept
        assert sender.counts[("panel", "sent")] == 0
        store.close()
    finally:
        b.close()
