"""Published back's MQTT side: retained messages on the site's broker, with their own client.

The interlock's pattern (interlock_mqtt.py), with the QoS chosen by ``publish_back.qos`` and
its own log events: its own paho client, never the collector's persistent session (a
subscriber's, manually acknowledged; a publisher's trouble, a topic the ACL refuses, must
not cost the data path its session). Client id ``<mqtt.client_id or pilotline-<site>>-
publish-back``, clean start, the ``mqtt:`` section's URL, credentials and TLS.

paho's network thread keeps the connection and reconnects by itself (waits of 1 s growing to
``mqtt.reconnect_max_s``). The latest message of every topic is kept here, and on every
CONNACK all of them are published again: a broker restarted without persistence has every
machine's current state, capacity and booking again within a reconnect. Publishing while
disconnected only updates that latest message.

``MemoryPublisher`` is the bundled fake with the same interface, for unit tests.
"""

from __future__ import annotations

from typing import Any, Protocol

import structlog

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.gateway.service.retained import LogEvents, RetainedPublisher

__all__ = ["EVENTS", "MemoryPublisher", "Publisher", "retained_publisher"]

log = structlog.get_logger("pilotline.gateway.publish_back")


class Publisher(Protocol):
    """Where published-back messages go: ``publish`` keeps ``payload`` as ``topic``'s latest
    message and sends it, retained, when it can."""

    def start(self) -> None: ...
    def stop(self) -> None: ...
    def publish(self, topic: str, payload: bytes) -> None: ...
    @property
    def connected(self) -> bool: ...
    def health(self) -> dict[str, Any]: ...


EVENTS = LogEvents(
    connected="publish_back.mqtt_connected",
    disconnected="publish_back.mqtt_disconnected",
    refused="publish_back.mqtt_refused",
    publish_failed="publish_back.publish_failed",
)


def retained_publisher(broker: MqttBrokerConfig, site: str, *, qos: int = 1) -> RetainedPublisher:
    """Published back's client: ``<client id>-publish-back``."""
    return RetainedPublisher(broker, site, suffix="publish-back", events=EVENTS, qos=qos)


class MemoryPublisher:
    """The bundled fake: every message published, in order, and each topic's latest."""

    def __init__(self) -> None:
        self.messages: list[tuple[str, bytes]] = []
        self.latest: dict[str, bytes] = {}
        self.started = False

    def start(self) -> None:
        self.started = True

    def stop(self) -> None:
        self.started = False

    def publish(self, topic: str, payload: bytes) -> None:
        self.messages.append((topic, payload))
        self.latest[topic] = payload

    @property
    def connected(self) -> bool:
        return self.started

    def health(self) -> dict[str, Any]:
        return {"connected": self.started, "topics": len(self.latest)}
