"""The interlock's MQTT side: each machine's signal, retained, QoS 1, on the site's broker,
with a client of its own (``<mqtt.client_id or pilotline-<site>>-interlock``; retained.py says
why its own, and how every signal is published again after a reconnect)."""

from __future__ import annotations

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.gateway.service.retained import LogEvents, RetainedPublisher

__all__ = ["EVENTS", "interlock_publisher"]

EVENTS = LogEvents(
    connected="interlock.mqtt_connected",
    disconnected="interlock.mqtt_disconnected",
    refused="interlock.mqtt_refused",
    publish_failed="interlock.publish_failed",
)


def interlock_publisher(broker: MqttBrokerConfig, site: str) -> RetainedPublisher:
    """The interlock's client: retained QoS 1 messages, published again after a reconnect."""
    return RetainedPublisher(broker, site, suffix="interlock", events=EVENTS, qos=1)
