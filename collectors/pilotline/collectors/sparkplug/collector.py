"""The Sparkplug B collector: the host state machine (``host.py``) behind an MQTT session.

Its own session, apart from the telemetry collector's: its own client id, a clean start and
no session kept (Sparkplug recovers through births, not through a backlog the broker kept).
paho runs its network loop in its thread; every message and every loss of the connection is
handed to the event loop, where the host runs, so the host and the gateway's intake are only
ever called from the event loop.

Passive (the default) subscribes ``spBv1.0/<group>/#`` for each group the machines name and
sends nothing. Primary also registers a retained Will ``spBv1.0/STATE/<host_id>`` =
``{"online": false, "timestamp": T}``, subscribes its own STATE topic, publishes the retained
``{"online": true, "timestamp": T}`` with the same T once subscribed, and sends the host's
rebirth requests as NCMD ``Node Control/Rebirth``.

A machine marked offline (NDEATH, DDEATH, the loss of the broker) gets, at the host's receive
time, a sample with its state signal at a value its state map reads as ``offline``
(``offline_values``); a machine whose state comes from thresholds gets a heartbeat then and
silence, so it goes offline from that time once ``stale_after_s`` has passed.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Iterable, Mapping
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pilotline.collectors.backoff import equal_jitter
from pilotline.collectors.clock import wall_clock_ms
from pilotline.collectors.mqtt.collector import QUARANTINE_HEAD_BYTES, Quarantined
from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.collectors.sparkplug.config import SparkplugHost
from pilotline.collectors.sparkplug.host import Binding, Host, HostSettings, Output
from pilotline.collectors.sparkplug.payload import PayloadError, decode, encode_rebirth
from pilotline.collectors.sparkplug.topic import NAMESPACE, node_topic, state_topic
from pilotline.rules.sample import Sample

__all__ = ["SparkplugCollector"]

log = structlog.get_logger("pilotline.collectors.sparkplug")

MALFORMED = "malformed_sparkplug"


def settings_of(host: SparkplugHost) -> HostSettings:
    return HostSettings(
        primary=host.mode == "primary",
        reorder_ms=round(host.reorder_s * 1000),
        rebirth_cooldown_ms=round(host.rebirth_cooldown_s * 1000),
        rebirth_max_ms=round(host.rebirth_max_s * 1000),
        rebirth_cap=host.rebirth_cap,
        heartbeat_ms=round(host.heartbeat_s * 1000),
    )


class SparkplugCollector:
    name = "sparkplug"

    def __init__(
        self,
        broker: MqttBrokerConfig,
        host: SparkplugHost,
        bindings: Iterable[Binding],
        on_sample: Callable[[Sample], None],
        on_reject: Callable[[Quarantined], None],
        *,
        client_id: str,
        offline_values: Mapping[str, tuple[str, str] | None],
        clock_ms: Callable[[], int] = wall_clock_ms,
        on_history: Callable[[Sample], None] | None = None,
    ) -> None:
        """``offline_values``: per machine, (its state signal, a value its state map reads as
        offline), or None when its state comes from thresholds. ``on_history``: where values
        flagged ``is_historical`` go (the gateway's ``Ingest.history``: stored telemetry,
        never the live state); without it they are only counted."""
        self._broker = broker
        self._config = host
        self._bindings = list(bindings)
        self._host = Host(self._bindings, settings_of(host))
        self._groups = sorted({b.group for b in self._bindings})
        self._on_sample = on_sample
        self._on_reject = on_reject
        self._client_id = host.client_id or client_id
        self._offline_values = dict(offline_values)
        self._clock_ms = clock_ms
        self._on_history = on_history
        self._loop: asyncio.AbstractEventLoop | None = None
        self._client: paho.Client | None = None
        self._lost: asyncio.Event | None = None
        self._wake: asyncio.Event | None = None
        self._connected = False
        self._since_ms: int | None = None
        self._last_error: str | None = None
        self._connections = 0
        self._received = 0
        self._rejected: dict[str, int] = {}
        self._history = 0
        self._logged: set[tuple[str, str, str]] = set()

    # -- what the gateway reads --------------------------------------------------------------

    @property
    def connected(self) -> bool:
        return self._connected

    @property
    def host(self) -> Host:
        return self._host

    def health_report(self, now_ms: int) -> dict[str, Any]:
        why = None if self._connected else f"disconnected: {self._last_error or 'connecting'}"
        nodes = {}
        for group, node in sorted({(b.group, b.node) for b in self._bindings}):
            born, bdseq, _ = self._host.node_state(group, node)
            nodes[f"{group}/{node}"] = {"born": born, "bd_seq": bdseq}
        return {
            "healthy": why is None,
            "why": why,
            "connected": self._connected,
            "mode": self._config.mode,
            "since_ms": self._since_ms,
            "reconnects": max(0, self._connections - 1),
            "received": self._received,
            "rejected": dict(self._rejected),
            "nodes": nodes,
            "reports": dict(self._host.counts),
            "rebirths_requested": dict(self._host.rebirths),
            "rebirths_held": dict(self._host.rebirths_held),
            "historical_values": self._history,
        }

    def gauges(self) -> tuple[bool, int, int, int, dict[str, int]]:
        return self._connected, max(0, self._connections - 1), 0, self._received, {}

    # -- the session ----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe and reconnect forever; returns only by cancellation."""
        self._loop = asyncio.get_running_loop()
        self._wake = asyncio.Event()
        ticker = asyncio.create_task(self._tick_forever(), name="sparkplug-timer")
        failures = 0
        try:
            while True:
                was_up = await self._session()
                failures = 0 if was_up else failures + 1
                delay = equal_jitter(failures, 1.0, self._broker.reconnect_max_s)
                log.warning("sparkplug.connection_lost" if was_up else "sparkplug.connect_failed",
                            reason=self._last_error, retry_in_s=round(delay, 1))
                await asyncio.sleep(delay)
        finally:
            ticker.cancel()

    async def _session(self) -> bool:
        """One connection, until it is lost; True if the broker accepted it."""
        assert self._loop is not None
        loop = self._loop
        self._lost = lost = asyncio.Event()
        accepted = loop.create_future()
        client = paho.Client(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        if self._broker.username is not None:
            client.username_pw_set(self._broker.username, self._broker.password())
        if self._broker.tls:
            import ssl  # noqa: PLC0415 (only a TLS site needs it)

            ca = str(self._broker.ca_file) if self._broker.ca_file is not None else None
            context = ssl.create_default_context(cafile=ca)
            if self._broker.cert_file is not None and self._broker.key_file is not None:
                context.load_cert_chain(self._broker.cert_file, self._broker.key_file)
            client.tls_set_context(context)
        birth_ms = self._clock_ms()
        if self._config.mode == "primary":
            assert self._config.host_id is not None
            client.will_set(
                state_topic(self._config.host_id),
                json.dumps({"online": False, "timestamp": birth_ms}),
                qos=1,
                retain=True,
            )

        def on_connect(
            c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Properties | None
        ) -> None:
            if rc.is_failure:
                loop.call_soon_threadsafe(_settle, accepted, f"broker refused: {rc}")
                return
            topics = [(f"{NAMESPACE}/{g}/#", 1) for g in self._groups]
            if self._config.mode == "primary":
                assert self._config.host_id is not None
                topics.append((state_topic(self._config.host_id), 1))
            c.subscribe(topics)
            loop.call_soon_threadsafe(_settle, accepted, None)

        def on_subscribe(c: paho.Client, _u: Any, _mid: int, _rc: Any, _p: Any) -> None:
            if self._config.mode == "primary":
                assert self._config.host_id is not None
                c.publish(
                    state_topic(self._config.host_id),
                    json.dumps({"online": True, "timestamp": birth_ms}),
                    qos=1,
                    retain=True,
                )

        def on_message(_c: paho.Client, _u: Any, msg: paho.MQTTMessage) -> None:
            loop.call_soon_threadsafe(self._message, msg.topic, bytes(msg.payload))

        def on_disconnect(_c: paho.Client, _u: Any, _f: Any, rc: ReasonCode, _p: Any) -> None:
            loop.call_soon_threadsafe(self._disconnected, lost, str(rc))

        client.on_connect = on_connect
        client.on_subscribe = on_subscribe
        client.on_message = on_message
        client.on_disconnect = on_disconnect
        try:
            # clean start, no session expiry: nothing kept for us while we are away
            await asyncio.to_thread(
                client.connect,
                self._broker.host,
                self._broker.port,
                self._broker.keepalive_s,
                clean_start=True,
            )
        except (OSError, ValueError) as exc:
            self._last_error = f"connect failed: {exc}"
            return False
        client.loop_start()
        try:
            try:
                async with asyncio.timeout(15):
                    refused = await accepted
            except TimeoutError:
                refused = "no CONNACK within 15 s"
            if refused is not None:
                self._last_error = refused
                return False
            self._client = client
            self._connections += 1
            self._set_connected(True)
            log.info("sparkplug.connected", url=self._broker.url, mode=self._config.mode,
                     groups=self._groups)
            await lost.wait()
            return True
        finally:
            self._client = None
            if self._connected:
                self._set_connected(False)
                self._apply(self._host.broker_lost(self._clock_ms()))
            host_id = self._config.host_id
            if self._config.mode == "primary" and host_id is not None and not lost.is_set():
                # a clean leave: the death certificate first (Sparkplug 3.0, host STATE)
                client.publish(
                    state_topic(host_id),
                    json.dumps({"online": False, "timestamp": self._clock_ms()}),
                    qos=1,
                    retain=True,
                )
            client.disconnect()
            await asyncio.to_thread(client.loop_stop)

    def _set_connected(self, up: bool) -> None:
        self._connected = up
        self._since_ms = self._clock_ms()

    def _disconnected(self, lost: asyncio.Event, why: str) -> None:
        self._last_error = why
        lost.set()

    # -- messages and time (in the event loop) -----------------------------------------------

    def _message(self, topic: str, data: bytes) -> None:
        now = self._clock_ms()
        self._received += 1
        if topic.startswith(f"{NAMESPACE}/STATE/"):
            return
        try:
            payload = decode(data)
        except PayloadError as exc:
            self._rejected[MALFORMED] = self._rejected.get(MALFORMED, 0) + 1
            self._on_reject(
                Quarantined(topic, MALFORMED, data[:QUARANTINE_HEAD_BYTES], now, None, str(exc))
            )
            payload = None
        self._apply(self._host.receive(topic, payload, now))
        if self._wake is not None:  # a gap may have set a nearer deadline
            self._wake.set()

    async def _tick_forever(self) -> None:
        assert self._wake is not None
        while True:
            deadline = self._host.next_deadline()
            delay = 1.0 if deadline is None else max(0.0, (deadline - self._clock_ms()) / 1000)
            try:
                async with asyncio.timeout(min(delay, 1.0)):
                    await self._wake.wait()
            except TimeoutError:
                pass
            self._wake.clear()
            self._apply(self._host.tick(self._clock_ms()))

    def _apply(self, out: Output) -> None:
        try:
            for sample in out.samples:
                self._on_sample(sample)
            for mark in out.offline:
                value = self._offline_values.get(mark.machine)
                values = {} if value is None else {value[0]: value[1]}
                self._on_sample(Sample(mark.machine, mark.at_ms, values))
                log.info("sparkplug.machine_offline", machine=mark.machine, cause=mark.cause,
                         at_ms=mark.at_ms)
            if out.history:
                # history only: stored at its own time, never the live state
                self._history += sum(len(s.values) for s in out.history)
                if self._on_history is not None:
                    for sample in out.history:
                        self._on_history(sample)
        except Exception as exc:  # a consumer bug must not stop the collector
            log.exception("sparkplug.callback_failed", error=repr(exc))
        for rebirth in out.rebirths:
            client = self._client
            log.warning("sparkplug.rebirth_requested", group=rebirth.group, node=rebirth.node,
                        cause=rebirth.cause)
            if client is not None:
                client.publish(
                    node_topic(rebirth.group, "NCMD", rebirth.node),
                    encode_rebirth(self._clock_ms()),
                    qos=0,
                )
        for report in out.reports:
            key = (report.kind, report.group, report.node)
            if key not in self._logged:
                self._logged.add(key)
                log.warning("sparkplug.reported", kind=report.kind, group=report.group,
                            node=report.node, device=report.device, detail=report.detail,
                            note="logged once per kind and node; later ones are counted")


def _settle(future: asyncio.Future[str | None], value: str | None) -> None:
    if not future.done():
        future.set_result(value)
