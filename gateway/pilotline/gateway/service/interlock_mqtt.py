"""The interlock's MQTT side: each machine's signal, retained, QoS 1, on the site's broker.

Its own paho client, not the collector's connection: the collector's session is a
subscriber's (persistent, manually acknowledged, absent on a site whose machines are all OPC
UA), and a publisher's trouble (a refused topic) must not cost the data path its session.
Client id ``<mqtt.client_id or pilotline-<site>>-interlock``, clean start, the ``mqtt:``
section's URL, credentials and TLS, as the alert channels connect (notify/mqtt/channel.py).

paho's network thread keeps the connection and reconnects by itself (waits of 1 s growing to
``mqtt.reconnect_max_s``). The latest message of every topic is kept here, and on every
CONNACK all of them are published again: a broker restarted without persistence (or one
that lost a QoS 1 message in flight) has every machine's current signal again within a
reconnect. Publishing while disconnected only updates that latest message.
"""

from __future__ import annotations

import threading
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.gateway.notify.mqtt.channel import tls_context

__all__ = ["InterlockPublisher"]

log = structlog.get_logger("pilotline.gateway.interlock")

QOS = 1


class InterlockPublisher:
    """Retained QoS 1 messages on the site's broker, published again after every reconnect."""

    def __init__(self, broker: MqttBrokerConfig, site: str) -> None:
        self.broker = broker
        self.client_id = f"{broker.client_id or f'pilotline-{site}'}-interlock"
        self._url = f"{'mqtts' if broker.tls else 'mqtt'}://{broker.host}:{broker.port}"
        self._lock = threading.Lock()
        self._latest: dict[str, bytes] = {}
        self._connected = False
        self.connects = 0  # CONNACKs accepted (the first, then one per reconnect)
        self.acked = 0  # PUBACKs with success
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
            "connects": self.connects,
            "acked": self.acked,
            "refused": self.refused,
            "last_error": self.last_error,
        }

    # -- paho's thread ---------------------------------------------------------------------

    def _send(self, client: paho.Client, topic: str, payload: bytes) -> None:
        info = client.publish(topic, payload, qos=QOS, retain=True)
        if info.rc not in (MQTTErrorCode.MQTT_ERR_SUCCESS, MQTTErrorCode.MQTT_ERR_NO_CONN):
            self.last_error = paho.error_string(info.rc)
            log.warning("interlock.publish_failed", topic=topic, error=self.last_error)

    def _on_connect(
        self, client: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        if reason.is_failure:
            self.last_error = f"{self._url} refused the connection: {reason}"
            log.warning("interlock.mqtt_refused", url=self._url, reason=str(reason))
            return
        with self._lock:
            self._connected = True
            self.connects += 1
            latest = dict(self._latest)
        log.info("interlock.mqtt_connected", url=self._url, republished=len(latest))
        for topic, payload in sorted(latest.items()):
            self._send(client, topic, payload)

    def _on_disconnect(
        self, _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
    ) -> None:
        with self._lock:
            was, self._connected = self._connected, False
        if was:
            self.last_error = f"disconnected: {reason}"
            log.warning("interlock.mqtt_disconnected", url=self._url, reason=str(reason))

    def _on_publish(self, _c: paho.Client, _u: Any, _mid: int, reason: ReasonCode, _p: Any) -> None:
        if reason.is_failure:
            self.refused += 1
            self.last_error = f"publish refused: {reason}"
            log.warning("interlock.publish_failed", error=self.last_error)
        else:
            self.acked += 1
