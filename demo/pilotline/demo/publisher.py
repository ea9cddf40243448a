"""Publish the simulated plant to an MQTT broker, the way the line's machines would.

The publisher plays the equipment, not the gateway, so it takes the simple road: paho's
own network thread (``loop_start``), which also reconnects with backoff when the broker
goes away. QoS 1 messages published while disconnected wait in paho's outgoing queue,
bounded by ``max_queued`` (beyond it they are dropped and counted, as a real machine's
buffer would overflow), and go out after the reconnect.
"""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Iterable

import paho.mqtt.client as mqtt
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.demo.plant import Plant
from pilotline.gateway.clock import wall_clock_ms

__all__ = ["PublishError", "publish_plant", "publish_timeline"]

log = structlog.get_logger("pilotline.demo")

# Packet ids are 16 bits: wait for each batch before paho would have to reuse one.
_BATCH = 10_000


class PublishError(RuntimeError):
    """The demo publisher could not connect or deliver; ``url`` says to which broker."""

    def __init__(self, message: str, *, url: str) -> None:
        super().__init__(f"{message} ({url})")
        self.url = url


def _client(mqtt_url: str, client_id: str) -> tuple[mqtt.Client, str, int]:
    """A paho client for ``mqtt[s]://host[:port]``, parsed as the gateway's configuration does."""
    broker = MqttBrokerConfig(url=mqtt_url)  # ValueError (pydantic's) for a bad URL
    client = mqtt.Client(
        CallbackAPIVersion.VERSION2,
        client_id=client_id,
        protocol=mqtt.MQTTv311,
        clean_session=True,
    )
    if broker.tls:
        client.tls_set()
    return client, broker.host, broker.port


async def publish_plant(
    plant: Plant,
    mqtt_url: str,
    *,
    interval_s: float = 1.0,
    duration_s: float | None = None,
    client_id: str = "pilotline-demo-plant",
    clock_ms: Callable[[], int] = wall_clock_ms,
    max_queued: int = 20_000,
    drain_timeout_s: float = 2.0,
) -> int:
    """Every ``interval_s``, publish ``plant.payloads(clock_ms())`` at QoS 1.

    Runs until cancelled or until ``duration_s`` has elapsed, and returns the number of
    messages handed to paho for delivery (dropped ones excluded). Ticks keep to a fixed
    grid; a tick that falls behind is skipped rather than bunched. On the way out it waits
    up to ``drain_timeout_s`` for outstanding acknowledgements.
    """
    if interval_s <= 0:
        raise ValueError(f"interval_s must be positive, got {interval_s}")
    client, host, port = _client(mqtt_url, client_id)
    client.max_queued_messages_set(max_queued)
    client.max_inflight_messages_set(1000)
    client.reconnect_delay_set(min_delay=1, max_delay=10)
    bound = log.bind(url=mqtt_url, client_id=client_id, machines=len(plant.machines))

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if reason.is_failure:
            bound.warning("demo.publisher.connect_refused", reason=str(reason))
        else:
            bound.info("demo.publisher.connected")

    def on_disconnect(
        _c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object
    ) -> None:
        if reason.is_failure:
            bound.warning("demo.publisher.disconnected", reason=str(reason))

    client.on_connect = on_connect
    client.on_disconnect = on_disconnect
    client.connect_async(host, port, keepalive=30)
    client.loop_start()

    published = dropped = 0
    loop = asyncio.get_running_loop()
    started = loop.time()
    tick = 0
    bound.info("demo.publisher.started", interval_s=interval_s, duration_s=duration_s)
    try:
        while duration_s is None or loop.time() - started < duration_s:
            for topic, payload in plant.payloads(clock_ms()):
                info = client.publish(topic, payload, qos=1)
                if info.rc == MQTTErrorCode.MQTT_ERR_QUEUE_SIZE:
                    if not dropped:  # once; the total is in demo.publisher.stopped
                        bound.warning("demo.publisher.queue_full", max_queued=max_queued)
                    dropped += 1
                else:
                    published += 1
            tick = max(tick + 1, int((loop.time() - started) / interval_s) + 1)
            next_at = started + tick * interval_s
            if duration_s is not None:
                next_at = min(next_at, started + duration_s)
            await asyncio.sleep(max(0.0, next_at - loop.time()))
        await _drain(client, drain_timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
        bound.info("demo.publisher.stopped", published=published, dropped=dropped)
    return published


async def _drain(client: mqtt.Client, timeout_s: float) -> None:
    """Wait until paho holds no unacknowledged message, or ``timeout_s`` has passed."""
    deadline = time.monotonic() + timeout_s
    while _outstanding(client):
        if time.monotonic() >= deadline:
            log.warning("demo.publisher.drain_timeout", outstanding=_outstanding(client))
            return
        await asyncio.sleep(0.02)


def _outstanding(client: mqtt.Client) -> int:
    # paho has no public count of unacknowledged QoS 1 messages; _out_messages is it.
    return len(client._out_messages)


def _wait_all(
    infos: list[mqtt.MQTTMessageInfo], deadline: float, url: str, timeout_s: float
) -> int:
    for info in infos:
        try:
            info.wait_for_publish(max(0.0, deadline - time.monotonic()))
        except (ValueError, RuntimeError) as exc:
            raise PublishError(f"message {info.mid} not published: {exc}", url=url) from exc
        if not info.is_published():
            raise PublishError(f"message {info.mid} not acknowledged within {timeout_s} s", url=url)
    return len(infos)


def publish_timeline(
    mqtt_url: str,
    messages: Iterable[tuple[str, bytes]],
    qos: int = 1,
    *,
    client_id: str = "pilotline-demo-timeline",
    timeout_s: float = 60.0,
) -> int:
    """Publish ``messages`` in order and wait for every acknowledgement; returns the count.

    Raises :class:`PublishError` when the broker cannot be reached or does not acknowledge
    everything within ``timeout_s``.
    """
    client, host, port = _client(mqtt_url, client_id)
    client.max_inflight_messages_set(1000)
    connected = threading.Event()

    def on_connect(_c: mqtt.Client, _u: object, _f: object, reason: ReasonCode, _p: object) -> None:
        if not reason.is_failure:
            connected.set()

    client.on_connect = on_connect
    deadline = time.monotonic() + timeout_s
    try:
        client.connect(host, port, keepalive=30)
    except OSError as exc:
        raise PublishError(f"cannot connect: {exc}", url=mqtt_url) from exc
    client.loop_start()
    try:
        if not connected.wait(timeout_s):
            raise PublishError("no CONNACK", url=mqtt_url)
        count = 0
        batch: list[mqtt.MQTTMessageInfo] = []
        for topic, payload in messages:
            batch.append(client.publish(topic, payload, qos=qos))
            if len(batch) >= _BATCH:
                count += _wait_all(batch, deadline, mqtt_url, timeout_s)
                batch = []
        return count + _wait_all(batch, deadline, mqtt_url, timeout_s)
    finally:
        client.disconnect()
        client.loop_stop()
