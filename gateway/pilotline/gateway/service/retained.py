"""Retained messages on the site's broker, with a paho client of their own: the interlock's
signals (interlock_mqtt.py) and the states published back (publish_back_mqtt.py).

Its own client, never the collector's connection: the collector's session is a
subscriber's (persistent, manually acknowledged, absent on a site whose machines are all OPC
UA), and a publisher's trouble (a topic the ACL refuses) must not cost the data path its
session. Clean start, the ``mqtt:`` section's URL, credentials and TLS, as the alert channels
connect (notify/mqtt/channel.py).

paho's network thread keeps the connection and reconnects by itself (waits of 1 s growing to
``mqtt.reconnect_max_s``). The latest message of every topic is kept here, and on every
CONNACK all of them are published again: a broker restarted without persistence (or one that
lost a QoS 1 message in flight) has every topic's current message again within a reconnect.
Publishing while disconnected only updates that latest message.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.gateway.notify.mqtt.channel import tls_context

__all__ = ["LogEvents", "RetainedPublisher"]

log = structlog.get_logger("pilotline.gateway")


@dataclass(frozen=True, slots=True)
class LogEvents:
    """The event names a publisher logs (written out where each user defines them, so the
    operator guide's check finds every name in the code)."""

    connected: str
    disconnected: str
    refused: str
    publish_failed: str


class RetainedPublisher:
    """Retained messages on the site's broker, every one published again after a reconnect."""

    def __init__(
        self,
        broker: MqttBrokerConfig,
        site: str,
        *,
        suffix: str,
        events: LogEvents,
        qos: int = 1,
    ) -> None:
        """Client id ``<mqtt.client_id or pilotline-<site>>-<suffix>``; ``events``: the log
        event names of its user (the interlock's, published back's)."""
        self.broker = broker
        self.qos = qos
        self.events = events
        self.client_id = f"{broker.client_id or f'pilotline-{site}'}-{suffix}"
        self._url = f"{'mqtts' if broker.tls else 'mqtt'}://{broker.host}:{broker.port}"
        self._lock = threading.Lock()
        self._latest: dict[str, bytes] = {}
        self._connected = False
        self.connects = 0  # CONNACKs accepted (the first, then one per reconnect)
        self.sent = 0  # messages handed to paho while connected
        self.acked = 0  # PUBACKs with success (QoS 1)
        self.refused = 0  # PUBACKs with a failure reason (an ACL: not authorized)
        self.last_error: str | None = None
        self._client: paho.Client | None = None

    # -- the event loop's side -------------------------------------------------------------

    def start(self) -> None:
        """Connect in paho's thread; it reconnects by itself from then on."""
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=True,
        )
        client.enable_logger()
        client.reconnect_delay_set(1, max(1, round(self.broker.reconnect_max_s)))
        client.on_connect = self._on_connect
        client.on_disconnect = self._on_disconnect
        client.on_publish = self._on_publish
        if self.broker.username is not None:
            client.username_pw_set(self.broker.username, self.broker.password())
        if self.broker.tls:
            client.tls_set_context(tls_context(self.broker))
        self._client = client
        # connect_async: a broker that is down at start is the network thread's to retry
        client.connect_async(
            self.broker.host, self.broker.port, self.broker.keepalive_s, clean_start=True
        )
        client.loop_start()

    def stop(self) -> None:
        client, self._client = self._client, None
        if client is not None:
            client.disconnect()
            client.loop_stop()

    def publish(self, topic: str, payload: bytes) -> None:
        """``payload`` is ``topic``'s latest message: published now if connected, else at
        the next CONNACK."""
        with self._lock:
            self._latest[topic] = payload
            connected, client = self._connected, self._client
        if connected and client is not None:
            self._send(client, topic, payload)

    @property
    def connected(self) -> bool:
        return self._connected

    def health(self) -> dict[str, Any]:
        return {
            "connected": self._connected,
            "url": self._url,
            "client_id": self.client_id,
            "qos": self.qos,
            "topics": len(self._latest),
            "connects": self.connects,
            "sent": self.sent,
            "acked": self.acked,
            "refused": self.refused,
            "last_error": self.last_error,
        }

    # -- paho's thread ---------------------------------------------------------------------

    def _send(self, client: paho.Client, topic: str, payload: bytes) -> None:
        info = client.publish(topic, payload, qos=self.qos, retain=True)
        if info.rc == MQTTErrorCode.MQTT_ERR_SUCCESS:
            self.sent += 1
        elif info.rc != MQTTErrorCode.MQTT_ERR_NO_CONN:  # no connection: sent at the CONNACK
            self.last_error = paho.error_string(info.rc)
            log.warning(self.events.publish_failed, topic=topic, error=self.last_error)

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        if reason.is_failure:
            self.last_error = f"{self._url} refused the connection: {reason}"
            log.warning(self.events.refused, url=self._url, reason=str(reason))
            return
        with self._lock:
            self._connected = True
            self.connects += 1
            latest = dict(self._latest)
        log.info(self.events.connected, url=self._url, republished=len(latest))
        for topic, payload in sorted(latest.items()):
            self._send(client, topic, payload)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if was:
            self.last_error = f"disconnected: {reason}"
            log.warning(self.events.disconnected, url=self._url, reason=str(reason))

    def _on_publish(self, _c: paho.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            self.refused += 1
            self.last_error = f"publish refused: {reason}"
            log.warning(self.events.publish_failed, error=self.last_error)
        else:
            self.acked += 1
