"""MQTT channels (``alerts.mqtt``): notifications and current alert states on the site's
broker, for dashboards, PLC panels and andon lights that already speak MQTT.

For each notification, QoS 1:

- each of its alerts' current state, **retained**, on ``<prefix>/state/<rule>/<machine>``
  (``status`` firing | resolved, severity, zone, value, message, since, ts): a subscriber
  that connects later gets every alert's latest state at once;
- then the notification payload itself (payload.py), not retained, on
  ``<prefix>/notifications``: one message per notification, however many alerts it groups.

Unless the channel is ``private``, both leave owner names out (``payload.without_owners``;
the state payload never carries one): a broker's other clients may read these topics.

Delivery succeeds only when the broker has acknowledged every one of those publishes (PUBACK,
with a success reason code) within ``timeout_s``; otherwise the row is retried as a whole, and
since the sender keeps the channel's order, the retained states end at the latest one.

The channel has its own paho client (client id ``<mqtt.client_id or pilotline-<site>>-alerts-
<name>``: never the collector's, which the broker would disconnect), connected on the first
delivery with the ``mqtt:`` section's URL, credentials and TLS, and kept open (paho's network
thread) until it fails or the sender stops. Clean start: a failed attempt leaves no session
state behind; the row, not the broker, holds what is still to send.
"""

from __future__ import annotations

import ssl
import threading
import time
from typing import Any
from urllib.parse import quote

import paho.mqtt.client as paho
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.reasoncodes import ReasonCode

from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.gateway.notify.booking import is_booking, without_parties
from pilotline.gateway.notify.channel import DeliveryError
from pilotline.gateway.notify.mqtt.config import AlertMqttConfig
from pilotline.gateway.notify.payload import dumps, without_owners

QOS = 1
PERMANENT_CONNACK = frozenset({0x84, 0x85, 0x86, 0x87, 0x8C})
"""Unsupported protocol version, client id not valid, bad user name or password, not
authorized, bad authentication method: the broker will refuse again until someone fixes it."""


def topic_level(name: str) -> str:
    """``name`` as one topic level: ``/``, ``+``, ``#``, ``%`` and NUL percent-encoded. Ids pass
    unchanged; a collector alert's "machine" (``opcua:opc.tcp://10.1.0.21:4840``) would
    otherwise split into levels."""
    return quote(name, safe=":.-_~@=,;!$&'()*")


def state_topic(prefix: str, rule: str, machine: str) -> str:
    return f"{prefix}/state/{topic_level(rule)}/{topic_level(machine)}"


def state_payload(site: str, a: dict[str, Any]) -> dict[str, Any]:
    """One alert's current state, as retained on its state topic."""
    return {
        "site": site,
        "rule": a["rule"],
        "machine": a["machine"],
        "zone": a["zone"],
        "severity": a["severity"],
        "status": a["status"],
        "value": a["value"],
        "message": a["message"],
        "since": a["since"],
        "since_ms": a["since_ms"],
        "ts": a["ts"],
        "ts_ms": a["ts_ms"],
    }


def messages(prefix: str, p: dict[str, Any]) -> list[tuple[str, bytes, bool]]:
    """``(topic, payload, retain)`` of one notification, in publishing order. A booking
    notification is one message on ``<prefix>/bookings`` (not retained)."""
    if is_booking(p):
        return [(f"{prefix}/bookings", dumps(p).encode(), False)]
    out = [
        (
            state_topic(prefix, a["rule"], a["machine"]),
            dumps(state_payload(p["site"], a)).encode(),
            True,
        )
        for a in p["alerts"]
    ]
    out.append((f"{prefix}/notifications", dumps(p).encode(), False))
    return out


def tls_context(broker: MqttBrokerConfig) -> ssl.SSLContext:
    """As the collector's: the chain and the host name verified, the client certificate if
    one is configured."""
    ca = str(broker.ca_file) if broker.ca_file is not None else None
    context = ssl.create_default_context(cafile=ca)
    if broker.cert_file is not None and broker.key_file is not None:
        context.load_cert_chain(broker.cert_file, broker.key_file)
    return context


class MqttChannel:
    """Delivers to one ``alerts.mqtt`` entry through the site's broker."""

    kind = "mqtt"

    def __init__(self, config: AlertMqttConfig, broker: MqttBrokerConfig, site: str) -> None:
        self.config = config
        self.name = config.name
        self.broker = broker
        self.prefix = config.prefix(site)
        self.client_id = f"{broker.client_id or f'pilotline-{site}'}-alerts-{config.name}"
        self._url = f"{'mqtts' if broker.tls else 'mqtt'}://{broker.host}:{broker.port}"
        self._client: paho.Client | None = None
        self._refused: dict[int, ReasonCode] = {}  # mid -> PUBACK failure reason
        self._closed = False

    def deliver(self, payload: dict[str, Any]) -> None:
        if self._closed:
            raise DeliveryError("channel closed")
        if not self.config.private:
            payload = without_parties(payload) if is_booking(payload) else without_owners(payload)
        client = self._connected()
        try:
            self._publish(client, messages(self.prefix, payload))
        except DeliveryError:
            self._drop()  # the next attempt starts from a fresh connection
            raise

    def close(self) -> None:
        self._closed = True
        self._drop()

    # -- connection ------------------------------------------------------------------------

    def _connected(self) -> paho.Client:
        client = self._client
        if client is not None and client.is_connected():
            return client
        self._drop()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self.client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        client.enable_logger()  # paho's errors in the gateway's log (logs.py renders them)
        connack = threading.Event()
        answer: list[ReasonCode] = []

        def on_connect(
            _c: paho.Client, _u: Any, _f: Any, reason: ReasonCode, _p: Any = None
        ) -> None:
            answer.append(reason)
            connack.set()

        def on_publish(_c: paho.Client, _u: Any, mid: int, reason: ReasonCode, _p: Any) -> None:
            if reason.is_failure:
                self._refused[mid] = reason

        client.on_connect = on_connect
        client.on_publish = on_publish
        try:
            if self.broker.username is not None:
                client.username_pw_set(self.broker.username, self.broker.password())
            if self.broker.tls:
                client.tls_set_context(tls_context(self.broker))
            client.connect(
                self.broker.host, self.broker.port, self.broker.keepalive_s, clean_start=True
            )
        except (OSError, ValueError) as exc:  # ssl.SSLError and socket errors are OSErrors
            raise DeliveryError(f"connect to {self._url} failed: {exc}") from None
        self._client = client
        client.loop_start()
        if self._closed:  # closed while this thread was connecting
            self._drop()
            raise DeliveryError("channel closed")
        if not connack.wait(self.config.timeout_s):
            self._drop()
            raise DeliveryError(f"no CONNACK from {self._url} within {self.config.timeout_s:g} s")
        reason = answer[0]
        if reason.is_failure:
            self._drop()
            raise DeliveryError(
                f"{self._url} refused the connection: {reason}",
                reason.value,
                permanent=reason.value in PERMANENT_CONNACK,
            )
        return client

    def _drop(self) -> None:
        client, self._client = self._client, None
        if client is None:
            return
        client.disconnect()
        client.loop_stop()
        self._refused.clear()

    # -- publishing ------------------------------------------------------------------------

    def _publish(self, client: paho.Client, batch: list[tuple[str, bytes, bool]]) -> None:
        infos: list[paho.MQTTMessageInfo] = []
        for topic, body, retain in batch:
            try:
                info = client.publish(topic, body, qos=QOS, retain=retain)
            except ValueError as exc:  # paho's checks of the topic and the size
                raise DeliveryError(f"cannot publish on {topic!r}: {exc}", permanent=True) from None
            if info.rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                raise DeliveryError(f"publish to {self._url} failed: {paho.error_string(info.rc)}")
            infos.append(info)
        deadline = time.monotonic() + self.config.timeout_s
        for info in infos:
            try:
                info.wait_for_publish(max(0.0, deadline - time.monotonic()))
            except (RuntimeError, ValueError) as exc:  # the connection went while waiting
                raise DeliveryError(f"publish to {self._url} failed: {exc}") from None
            if not info.is_published():
                unacked = sum(not i.is_published() for i in infos)
                raise DeliveryError(
                    f"{self._url} did not acknowledge {unacked} of {len(infos)} messages "
                    f"within {self.config.timeout_s:g} s"
                )
        refused = [self._refused[i.mid] for i in infos if i.mid in self._refused]
        if refused:
            raise DeliveryError(
                f"{self._url} refused {len(refused)} of {len(infos)} messages: {refused[0]}",
                refused[0].value,
                permanent=True,
            )
