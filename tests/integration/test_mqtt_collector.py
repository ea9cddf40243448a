"""The MQTT collector against a real Mosquitto (no mock of the broker)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path

import paho.mqtt.client as paho
import pytest
from paho.mqtt import publish
from structlog.testing import capture_logs

from pilotline.collectors.mqtt import (
    AckToken,
    MqttBrokerConfig,
    MqttCollector,
    Quarantined,
)
from pilotline.demo.broker import MosquittoBroker, find_mosquitto
from pilotline.rules.sample import Quality, Sample

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

TOPIC = "pilot/photonics/cam-02/telemetry"
TS = 1_795_737_600_123


@dataclass
class Recorder:
    samples: list[tuple[Sample, AckToken]] = field(default_factory=list)
    rejects: list[tuple[Quarantined, AckToken]] = field(default_factory=list)

    def on_sample(self, sample: Sample, token: AckToken) -> None:
        self.samples.append((sample, token))

    def on_reject(self, item: Quarantined, token: AckToken) -> None:
        self.rejects.append((item, token))

    def values(self, key: str) -> list[object]:
        return [s.values.get(key) for s, _ in self.samples]


def make_collector(
    broker: MosquittoBroker,
    recorder: Recorder,
    *,
    topics: Mapping[str, str] | None = None,
    client_id: str = "pilotline-test",
    **config: object,
) -> MqttCollector:
    cfg = MqttBrokerConfig.model_validate({"url": broker.url, "reconnect_max_s": 0.2, **config})
    return MqttCollector(
        cfg,
        topics if topics is not None else {TOPIC: "cam-02"},
        recorder.on_sample,
        recorder.on_reject,
        client_id=client_id,
    )


@contextlib.asynccontextmanager
async def running(collector: MqttCollector) -> AsyncIterator[MqttCollector]:
    task = asyncio.create_task(collector.run(), name="mqtt-collector")
    try:
        await wait_until(lambda: collector.health().subscribed or task.done())
        assert not task.done(), "run() returned"
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(condition: Callable[[], bool], timeout_s: float = 5.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.01)


async def publish_all(
    broker: MosquittoBroker, payloads: list[bytes | str], topic: str = TOPIC
) -> None:
    msgs: publish.MessagesList = [(topic, p, 1, False) for p in payloads]
    await asyncio.to_thread(
        publish.multiple, msgs, hostname="127.0.0.1", port=broker.port, protocol=paho.MQTTv5
    )


async def test_samples_arrive_with_source_time_and_values(broker: MosquittoBroker) -> None:
    rec = Recorder()
    collector = make_collector(broker, rec)
    async with running(collector):
        await publish_all(
            broker,
            [
                b'{"ts": 1795737600123, "power_w": 812.5, "state": "Executing"}',
                b'{"ts": "2026-11-27T02:00:00.123+02:00", "power_w": 3, "quality": "uncertain"}',
                b"{}",
            ],
        )
        await wait_until(lambda: len(rec.samples) == 3)
        health = collector.health()

    first, second, heartbeat = (s for s, _ in rec.samples)
    assert first == Sample("cam-02", TS, {"power_w": 812.5, "state": "Executing"})
    assert second == Sample("cam-02", TS, {"power_w": 3.0}, Quality.UNCERTAIN)
    assert heartbeat.values == {}
    assert abs(heartbeat.ts_ms - time.time() * 1000) < 10_000  # arrival time
    assert all(token.qos == 1 for _, token in rec.samples)
    assert health.connected
    assert health.received == 3
    assert health.topics[TOPIC] is not None
    assert health.rejected == {}


async def test_persistent_session_redelivers_unacked_and_queued(broker: MosquittoBroker) -> None:
    rec = Recorder()
    async with running(make_collector(broker, rec)) as collector:
        await publish_all(broker, [f'{{"n": {n}}}' for n in (1, 2, 3)])
        await wait_until(lambda: len(rec.samples) == 3)
        collector.ack([rec.samples[0][1]])  # n=1 is durable; 2 and 3 are not
        stale = rec.samples[1][1]

    # Published while the gateway is away: the broker queues them in our session.
    await publish_all(broker, [f'{{"n": {n}}}' for n in (4, 5)])

    rec2 = Recorder()
    async with running(make_collector(broker, rec2)) as collector:
        await wait_until(lambda: len(rec2.samples) >= 4)
        await asyncio.sleep(0.2)  # nothing else should come
        assert sorted(rec2.values("n")) == [2.0, 3.0, 4.0, 5.0]  # type: ignore[type-var]
        assert collector.health().unacked == 4
        collector.ack([stale])  # from the previous connection: dropped, not misapplied
        collector.ack(t for _, t in rec2.samples)
        collector.ack([rec2.samples[0][1]])  # twice: dropped
        health = collector.health()
        assert (health.unacked, health.dropped_acks) == (0, 2)

    rec3 = Recorder()
    async with running(make_collector(broker, rec3)):
        await publish_all(broker, [b'{"n": 6}'])
        await wait_until(lambda: len(rec3.samples) == 1)
        await asyncio.sleep(0.2)
    assert rec3.values("n") == [6.0]  # everything acked before is gone for good


async def test_reconnects_after_broker_is_killed(broker: MosquittoBroker) -> None:
    rec = Recorder()
    async with running(make_collector(broker, rec)) as collector:
        await publish_all(broker, [b'{"n": 1}'])
        await wait_until(lambda: len(rec.samples) == 1)
        collector.ack([rec.samples[0][1]])

        await asyncio.to_thread(broker.stop, kill=True)
        await wait_until(lambda: not collector.health().connected)
        down = collector.health()
        assert down.last_error is not None
        assert not down.subscribed

        await asyncio.to_thread(broker.start)
        await wait_until(lambda: collector.health().subscribed, timeout_s=10)
        await publish_all(broker, [b'{"n": 2}'])
        await wait_until(lambda: 2.0 in rec.values("n"))
        health = collector.health()

    assert health.connected
    assert health.reconnects >= 1


async def test_bad_payloads_are_quarantined_and_good_ones_keep_flowing(
    broker: MosquittoBroker,
) -> None:
    other = "pilot/photonics/old-machine/telemetry"
    # A previous configuration subscribed to `other`; the persistent session keeps it.
    async with running(make_collector(broker, Recorder(), topics={TOPIC: "cam-02", other: "x"})):
        pass

    bad: dict[str, bytes] = {
        "oversized": b'{"power_w": 1, "pad": "' + b"x" * 600 + b'"}',
        "malformed_json": b'{"power_w": NaN}',
        "not_an_object": b"[1, 2]",
        "bad_timestamp": b'{"ts": 1795737600, "power_w": 1}',
        "wrong_type": b'{"power_w": true}',
    }
    rec = Recorder()
    with capture_logs() as logs:
        async with running(make_collector(broker, rec, max_payload_bytes=512)) as collector:
            for payload in bad.values():
                await publish_all(broker, [payload, b'{"power_w": 1.5}'])
            await publish_all(broker, [b'{"power_w": 2}'], topic=other)
            await publish_all(broker, [bad["wrong_type"], b'{"power_w": 2.5}'])
            await wait_until(lambda: len(rec.samples) == 6 and len(rec.rejects) == 7)
            health = collector.health()

    reasons = [q.reason for q, _ in rec.rejects]
    assert reasons == [*bad, "unknown_topic", "wrong_type"]
    assert rec.values("power_w") == [1.5] * 5 + [2.5]
    oversized = rec.rejects[0][0]
    assert oversized.head == bad["oversized"][:256]
    assert oversized.machine == "cam-02"
    unknown = rec.rejects[5][0]
    assert (unknown.topic, unknown.machine) == (other, None)
    assert health.rejected == {**dict.fromkeys(bad, 1), "unknown_topic": 1, "wrong_type": 2}
    assert health.received == 13
    logged = [e["reason"] for e in logs if e["event"] == "mqtt.payload_rejected"]
    assert logged == [*bad, "unknown_topic"]  # once per reason


async def test_collector_survives_a_failing_consumer(broker: MosquittoBroker) -> None:
    seen: list[Sample] = []

    def on_sample(sample: Sample, _token: AckToken) -> None:
        seen.append(sample)
        if len(seen) == 1:
            raise RuntimeError("gateway bug")

    cfg = MqttBrokerConfig(url=broker.url, reconnect_max_s=0.2)
    collector = MqttCollector(cfg, {TOPIC: "m"}, on_sample, lambda q, t: None, client_id="c2")
    with capture_logs() as logs:
        async with running(collector):
            await publish_all(broker, [b'{"n": 1}', b'{"n": 2}'])
            await wait_until(lambda: len(seen) == 2)
    assert any(e["event"] == "mqtt.callback_failed" for e in logs)


async def test_refused_connection_is_retried_with_backoff() -> None:
    rec = Recorder()
    with MosquittoBroker() as b:
        port = b.port
    cfg = MqttBrokerConfig(url=f"mqtt://127.0.0.1:{port}", reconnect_max_s=0.1)
    collector = MqttCollector(cfg, {TOPIC: "m"}, rec.on_sample, rec.on_reject, client_id="c3")
    with capture_logs() as logs:
        task = asyncio.create_task(collector.run())
        await wait_until(
            lambda: sum(e["event"] == "mqtt.connect_failed" for e in logs) >= 3, timeout_s=3
        )
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task
    health = collector.health()
    assert not health.connected
    assert health.last_error is not None
    assert "failed" in health.last_error


@pytest.mark.skipif(shutil.which("mosquitto_passwd") is None, reason="needs mosquitto_passwd")
async def test_password_from_file_and_refused_credentials(tmp_path: Path, passwd: Path) -> None:
    b = MosquittoBroker()
    b.conf.write_text(
        b.conf.read_text().replace(
            "allow_anonymous true", f"allow_anonymous false\npassword_file {passwd}"
        )
    )
    good, bad = tmp_path / "good", tmp_path / "bad"
    good.write_text("s3cret\n")
    bad.write_text("wrong\n")
    try:
        b.start()
        rec = Recorder()
        with capture_logs() as logs:
            refused = make_collector(b, rec, username="gw", password_file=bad, client_id="c4")
            task = asyncio.create_task(refused.run())
            await wait_until(lambda: any(e["event"] == "mqtt.connect_failed" for e in logs))
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await task
            assert "refused" in (refused.health().last_error or "")

            async with running(make_collector(b, rec, username="gw", password_file=good)):
                pass
        assert not any("s3cret" in str(e) or "wrong" in str(e) for e in logs)
    finally:
        b.close()
