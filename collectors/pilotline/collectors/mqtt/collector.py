"""The MQTT collector: paho-mqtt driven from the asyncio event loop.

Theory of operation
-------------------
paho does the protocol; this package does the I/O scheduling, like aiomqtt 2.x: each
connection's socket is registered with the event loop (``connection.py``), so there is no
paho thread and every callback, and so every ``on_sample``/``on_reject``, runs
synchronously in the event loop. Only the blocking part of a connection attempt (DNS, TCP
connect, TLS handshake) runs in a worker thread.

Each connection is a fresh paho client with the same client id, MQTT v5,
``clean_start=False`` and a Session Expiry Interval: the broker keeps our subscriptions
(``topics.py``) and queues QoS 1 messages while we are away. Acknowledgement is manual: a
PUBACK goes out only when the gateway calls ``ack()`` after the sample is durable
(``acks.py``: why each ``AckToken`` carries a delivery number).

This module holds the collector: the reconnect loop, paho's protocol callbacks, and the
per-message path from a PUBLISH to ``on_sample``/``on_reject`` (the hot path).
``health.py`` holds what it reports; ``contest.py`` decides when another client with our
client id takes the session over (then the collector says so, counts as down and backs off
for minutes rather than seconds).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import functools
import ssl
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import paho.mqtt.client as paho
import structlog
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode
from paho.mqtt.packettypes import PacketTypes
from paho.mqtt.properties import Properties
from paho.mqtt.reasoncodes import ReasonCode

from pilotline.collectors.backoff import equal_jitter
from pilotline.collectors.clock import wall_clock_ms
from pilotline.collectors.mqtt.acks import AckToken, acknowledge
from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.collectors.mqtt.connection import Connection, close_quietly
from pilotline.collectors.mqtt.contest import QUIET_S, Contest, how_it_ended
from pilotline.collectors.mqtt.formats import DEFAULT_FORMAT
from pilotline.collectors.mqtt.health import MqttHealth, health_report
from pilotline.collectors.mqtt.mapped import decode_mapped
from pilotline.collectors.mqtt.parse import (
    OVERSIZED,
    UNKNOWN_TOPIC,
    Rejection,
    cap_signals,
    decode,
)
from pilotline.collectors.mqtt.reader import BufferedClient
from pilotline.collectors.mqtt.routes import Resolved, Route, Router
from pilotline.collectors.mqtt.topics import TopicMap
from pilotline.rules.sample import Sample

# AckToken and MqttHealth live in their own modules and stay importable from here, where
# the gateway and the tests import them.
__all__ = ["AckToken", "MqttCollector", "MqttHealth", "Quarantined"]

log = structlog.get_logger("pilotline.collectors.mqtt")

QUARANTINE_HEAD_BYTES = 256
CONNACK_TIMEOUT_S = 15.0
_FIRST_BACKOFF_S = 1.0
_new_tuple = tuple.__new__


@dataclass(frozen=True, slots=True)
class Quarantined:
    """A refused message: what to keep in quarantine and count under ``reason``."""

    topic: str
    reason: str
    head: bytes  # the first QUARANTINE_HEAD_BYTES bytes of the payload
    arrival_ms: int
    machine: str | None
    detail: str = ""


class MqttCollector:
    """Receives JSON payloads on one topic per machine and hands out ``Sample``s."""

    name = "mqtt"

    def __init__(
        self,
        config: MqttBrokerConfig,
        topics: Mapping[str, str],
        on_sample: Callable[[Sample, AckToken], None],
        on_reject: Callable[[Quarantined, AckToken], None],
        *,
        client_id: str,
        clock_ms: Callable[[], int] = wall_clock_ms,
        signals: Mapping[str, Iterable[str]] | None = None,
        routes: Sequence[Route] = (),
    ) -> None:
        """``topics``: exact topic -> machine, payloads in the default format; ``routes``:
        topic templates (wildcards, ``{machine}``, ``{signal}``) and payload formats.
        ``signals``: per machine, the signals it is configured with (its state signal,
        those alert rules read), which a payload beyond ``max_signals`` always keeps."""
        if not client_id:
            raise ValueError("client_id must not be empty: the persistent session depends on it")
        self._config = config
        self._router = Router(topics, routes)
        self._topic_map = TopicMap(self._router.filters)
        self._topics = self._topic_map.machines  # filter -> machine
        self._by_topic_bytes = self._router.by_bytes  # the per-message path reads this
        self._on_sample = on_sample
        self._keep = {machine: frozenset(names) for machine, names in (signals or {}).items()}
        self._max_signals = config.max_signals
        self._on_reject = on_reject
        self._client_id = config.client_id or client_id
        self._clock_ms = clock_ms
        self._url = f"{'mqtts' if config.tls else 'mqtt'}://{config.host}:{config.port}"

        self._loop: asyncio.AbstractEventLoop | None = None
        self._conn: Connection | None = None
        self._generation = 0

        self._connected = False
        self._since_ms: int | None = None
        self._last_error: str | None = None
        self._connections = 0
        self._subscribed = False
        self._session_present = False
        self._last_message_ms: dict[str, int | None] = dict.fromkeys(self._topics)
        self._received = 0
        self._deliveries = 0
        self._rejected: dict[str, int] = {}
        self._signals_dropped: dict[str, int] = {}
        self._dropped_acks = 0
        self._pauses = 0
        self._contest = Contest(self._client_id)
        self._contested_now: str | None = None  # why the connection just lost was contested
        self._ended_generation = 0  # the last connection whose end was judged (judged once)

    # -- public -----------------------------------------------------------------------------

    async def run(self) -> None:
        """Connect, subscribe and reconnect forever; returns only by cancellation."""
        self._loop = asyncio.get_running_loop()
        executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="pilotline-mqtt-connect"
        )
        failures = 0
        try:
            while True:
                was_up = await self._connect_once(executor)
                contested, self._contested_now = self._contested_now, None
                if contested is not None:
                    failures = 0
                    delay = self._contest.backoff_s()
                    log.error(
                        "mqtt.session_taken_over",
                        url=self._url,
                        client_id=self._client_id,
                        why=contested,
                        likely_cause="a second gateway (or another client) uses this client id",
                        contested_since_ms=self._contest.since_ms,
                        rounds=self._contest.rounds,
                        retry_in_s=round(delay, 1),
                    )
                elif was_up:
                    failures = 0
                    delay = self._backoff(0)
                    log.warning("mqtt.connection_lost", reason=self._last_error, retry_in_s=delay)
                else:
                    delay = self._backoff(failures)
                    failures += 1
                    log.warning("mqtt.connect_failed", reason=self._last_error, retry_in_s=delay)
                await asyncio.sleep(delay)
        finally:
            executor.shutdown(wait=False, cancel_futures=True)

    def ack(self, tokens: Iterable[AckToken]) -> None:
        """Acknowledge messages to the broker; call from the event loop's thread.

        Tokens from an earlier connection and repeated tokens are dropped (the broker
        redelivers the messages of a lost connection); QoS 0 tokens need no acknowledgement.
        Acknowledge in arrival order where possible (MQTT asks for PUBACKs in order).
        """
        conn = self._conn
        if conn is None:
            return
        self._dropped_acks += acknowledge(conn, tokens)
        if conn.paused and len(conn.outstanding) < self._config.receive_maximum:
            conn.resume()

    def health(self) -> MqttHealth:
        contest = self._contest
        return MqttHealth(
            connected=self._connected,
            since_ms=self._since_ms,
            last_error=self._last_error,
            reconnects=max(0, self._connections - 1),
            subscribed=self._subscribed,
            topics=dict(self._last_message_ms),
            received=self._received,
            rejected=dict(self._rejected),
            unacked=len(self._conn.outstanding) if self._conn is not None else 0,
            dropped_acks=self._dropped_acks,
            pauses=self._pauses,
            session_present=self._connected and self._session_present,
            contested=contest.why,
            contested_since_ms=contest.since_ms,
            signals_dropped=dict(self._signals_dropped),
        )

    # -- what the gateway reads (its Collector protocol) ----------------------------------

    @property
    def connected(self) -> bool:
        """Connected with the session ours: while another client takes it over from us,
        the collector counts as down for the alert rules even between two takeovers."""
        return self._connected and not self._contest.active

    def health_report(self, now_ms: int) -> dict[str, Any]:
        """This collector's part of the gateway's ``/health``."""
        return health_report(self.health(), now_ms)

    def gauges(self) -> tuple[bool, int, int, int, dict[str, int]]:
        """connected, reconnects, values with a Bad status (none in MQTT), messages received,
        signals dropped beyond ``max_signals`` by machine."""
        h = self.health()
        return h.connected, h.reconnects, 0, h.received, h.signals_dropped or {}

    # -- connection lifecycle ------------------------------------------------------------------

    def _backoff(self, failures: int) -> float:
        return equal_jitter(failures, _FIRST_BACKOFF_S, self._config.reconnect_max_s)

    def _make_client(self) -> BufferedClient:
        client = BufferedClient(
            CallbackAPIVersion.VERSION2,
            client_id=self._client_id,
            protocol=paho.MQTTv5,
            reconnect_on_failure=False,
        )
        client.manual_ack_set(True)
        # A broker that ignores the Maximum Packet Size below loses the connection rather
        # than have the gateway gather a huge packet.
        client.max_packet_size = self._config.max_packet_bytes
        client.on_connect = self._handle_connect
        client.on_disconnect = self._handle_disconnect
        client.on_subscribe = self._handle_subscribe
        client.on_message = self._handle_message  # QoS 2 only: paho's own reader
        client.on_publish_raw = functools.partial(self._handle_raw, client)
        client.on_socket_open = self._handle_socket_open
        client.on_socket_close = self._handle_socket_close
        client.on_socket_register_write = self._handle_register_write
        client.on_socket_unregister_write = self._handle_unregister_write
        if self._config.username is not None:
            client.username_pw_set(self._config.username, self._config.password())
        if self._config.tls:
            ca = str(self._config.ca_file) if self._config.ca_file is not None else None
            context = ssl.create_default_context(cafile=ca)  # verifies the host name, TLS>=1.2
            if self._config.cert_file is not None and self._config.key_file is not None:
                context.load_cert_chain(self._config.cert_file, self._config.key_file)
            client.tls_set_context(context)
        return client

    async def _connect_once(self, executor: concurrent.futures.Executor) -> bool:
        """One connection, from attempt to loss; True if the broker accepted it."""
        assert self._loop is not None
        self._generation += 1
        try:
            client = self._make_client()
        except (OSError, ValueError) as exc:
            self._last_error = f"client setup failed: {exc}"
            return False
        conn = Connection(
            client=client,
            generation=self._generation,
            connack=self._loop.create_future(),
            closed=self._loop.create_future(),
            loop=self._loop,
            receive_maximum=self._config.receive_maximum,
            on_pause=self._count_pause,
        )
        self._conn = conn
        props = Properties(PacketTypes.CONNECT)  # type: ignore[no-untyped-call]
        props.SessionExpiryInterval = self._config.session_expiry_s
        # Flow control: the broker should send at most this many QoS 1 messages without a
        # PUBACK, and PUBACKs go out only once samples are durable. Mosquitto 2.0 does not
        # hold to it under a steady stream, so the connection also stops reading at that many.
        props.ReceiveMaximum = self._config.receive_maximum
        # The broker must not send a larger packet (it drops it): a 100 MB message is never
        # read into memory to be refused after.
        props.MaximumPacketSize = self._config.max_packet_bytes
        cfuture = executor.submit(
            client.connect,
            self._config.host,
            self._config.port,
            self._config.keepalive_s,
            clean_start=False,
            properties=props,
        )
        try:
            await asyncio.wrap_future(cfuture)
        except asyncio.CancelledError:
            # The thread cannot be interrupted: close whatever socket it opens, and leave
            # paho alone until then (its deferred socket callbacks are never replayed).
            cfuture.add_done_callback(lambda _f: close_quietly(conn.sock))
            raise
        except (OSError, ValueError) as exc:  # ssl.SSLError and socket errors are OSErrors
            self._last_error = f"connect to {self._url} failed: {exc}"
            conn.teardown()
            return False
        try:
            conn.connect_returned()

            try:
                # asyncio.timeout, not wait_for: on Python 3.11 wait_for loses a cancellation
                # that comes as the CONNACK does (gh-86296), and this loop then runs forever
                async with asyncio.timeout(CONNACK_TIMEOUT_S):
                    refused = await asyncio.shield(conn.connack)
            except TimeoutError:
                refused = f"no CONNACK within {CONNACK_TIMEOUT_S:g} s"
            if refused is not None:
                self._last_error = refused
                conn.teardown()
                return False

            await asyncio.shield(conn.closed)
            return True
        except asyncio.CancelledError:
            conn.disconnect()
            log.info("mqtt.disconnected", url=self._url)
            raise
        finally:
            self._set_connected(False)

    def _set_connected(self, connected: bool) -> None:
        if connected != self._connected or self._since_ms is None:
            self._since_ms = self._clock_ms()
        self._connected = connected
        if not connected:
            self._subscribed = False

    def _count_pause(self) -> None:
        self._pauses += 1

    # -- socket callbacks (paho -> the connection, in the event loop) -------------------------

    def _current(self, client: paho.Client) -> Connection | None:
        conn = self._conn
        return conn if conn is not None and conn.client is client else None

    def _handle_socket_open(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        conn = self._current(client)
        if conn is None:
            return
        conn.sock = sock
        conn.in_loop(lambda: conn.attach(sock))

    def _handle_socket_close(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        conn = self._current(client)
        if conn is None:
            return
        conn.in_loop(lambda: conn.socket_closed(sock))

    def _handle_register_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        conn = self._current(client)
        if conn is None:
            return
        conn.in_loop(lambda: conn.add_writer(sock))

    def _handle_unregister_write(self, client: paho.Client, _userdata: Any, sock: Any) -> None:
        conn = self._current(client)
        if conn is None:
            return
        conn.in_loop(lambda: conn.remove_writer(sock))

    # -- protocol callbacks --------------------------------------------------------------------

    def _handle_connect(
        self,
        client: paho.Client,
        _userdata: Any,
        flags: paho.ConnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        conn = self._current(client)
        if conn is None:
            return
        if reason_code.is_failure:
            self._last_error = f"broker refused the connection: {reason_code}"
            if not conn.connack.done():
                conn.connack.set_result(self._last_error)
            return
        self._connections += 1
        self._session_present = bool(flags.session_present)
        self._set_connected(True)
        log.info("mqtt.connected", url=self._url, session_present=flags.session_present)
        if self._contest.active and self._loop is not None:
            self._loop.call_later(QUIET_S, self._held, conn)
        self._subscribe(conn)
        if not conn.connack.done():
            conn.connack.set_result(None)

    def _subscribe(self, conn: Connection) -> None:
        """Subscribe to every topic in one SUBSCRIBE, also on a resumed session."""
        if not self._topics:
            self._subscribed = True
            log.info("mqtt.subscribed", topics=0)
            return
        result, mid = conn.client.subscribe(self._topic_map.subscription())
        if result != MQTTErrorCode.MQTT_ERR_SUCCESS:
            log.error("mqtt.subscribe_failed", reason=paho.error_string(result))
            return
        conn.subscribe_mid = mid

    def _handle_subscribe(
        self,
        client: paho.Client,
        _userdata: Any,
        mid: int,
        reason_codes: list[ReasonCode],
        _properties: Properties | None,
    ) -> None:
        conn = self._current(client)
        if conn is None or mid != conn.subscribe_mid:
            return
        self._subscribed = self._topic_map.granted(reason_codes)

    def _handle_disconnect(
        self,
        client: paho.Client,
        _userdata: Any,
        flags: paho.DisconnectFlags,
        reason_code: ReasonCode,
        _properties: Properties | None,
    ) -> None:
        conn = self._current(client)
        if conn is None:
            return
        from_broker = flags.is_disconnect_packet_from_server
        self._last_error = f"{'broker' if from_broker else 'client'}: {reason_code}"
        if self._connected and self._ended_generation != conn.generation:
            # paho may report one end twice (a DISCONNECT, then the socket): judge it once
            self._ended_generation = conn.generation
            now = self._clock_ms()
            self._contested_now = self._contest.ended(
                how_it_ended(from_broker=from_broker, reason=reason_code.value),
                lasted_ms=now - (self._since_ms if self._since_ms is not None else now),
                at_ms=now,
            )

    def _held(self, conn: Connection) -> None:
        """``QUIET_S`` after a connection in a contest was accepted: if it still holds, the
        other client is gone."""
        if self._conn is conn and self._connected and self._contest.active:
            log.info("mqtt.session_settled", url=self._url, held_s=QUIET_S)
            self._contest.held()

    # -- messages (the hot path) ---------------------------------------------------------------

    def _handle_message(self, client: paho.Client, _userdata: Any, msg: paho.MQTTMessage) -> None:
        """A message through paho's own reader (QoS 2; QoS 0/1 come to ``_handle_raw``)."""
        conn = self._current(client)
        if conn is None:
            return
        try:
            topic = msg.topic
        except UnicodeDecodeError:  # paho decodes lazily; MQTT requires UTF-8 topics
            topic = bytes(msg._topic).decode("utf-8", "replace")
        payload = bytes(msg.payload)
        self._deliver(conn, topic, self._router.lookup(topic), payload, mid=msg.mid, qos=msg.qos)

    def _handle_raw(
        self, client: BufferedClient, topic_bytes: bytes, payload: bytes, mid: int, qos: int
    ) -> None:
        """A QoS 0/1 PUBLISH from the buffered reader (the hot path)."""
        conn = self._conn
        if conn is None or conn.client is not client:
            return
        known = self._by_topic_bytes.get(topic_bytes)
        if known is not None:
            self._deliver(conn, known[0], known, payload, mid=mid, qos=qos)
        else:  # under a template, or unknown (MQTT requires UTF-8: a broken one as best we can)
            topic = topic_bytes.decode("utf-8", "replace")
            self._deliver(conn, topic, self._router.lookup(topic), payload, mid=mid, qos=qos)

    def _deliver(
        self,
        conn: Connection,
        topic: str,
        route: Resolved | None,
        payload: bytes,
        *,
        mid: int,
        qos: int,
    ) -> None:
        arrival_ms = self._clock_ms()
        self._received += 1
        self._deliveries += 1
        token = _new_tuple(AckToken, (mid, qos, self._deliveries))  # AckToken(...), faster
        if qos > 0:
            conn.outstanding[mid] = self._deliveries
        result: Sample | Rejection
        machine: str | None = None
        if route is None:
            result = Rejection(UNKNOWN_TOPIC, f"no machine is configured for topic {topic!r}")
        else:
            _, machine, fmt, signal, subscribed = route
            self._last_message_ms[subscribed] = arrival_ms
            max_bytes = self._config.max_payload_bytes
            if len(payload) > max_bytes:
                result = Rejection(OVERSIZED, f"{len(payload)} bytes > max_payload_bytes")
            elif fmt is None and signal is None:  # the default format: the fast decoder
                result = decode(payload, machine, arrival_ms, max_bytes)
            else:
                result = decode_mapped(
                    payload, machine, arrival_ms, max_bytes, fmt or DEFAULT_FORMAT, signal=signal
                )
        try:
            if isinstance(result, Sample):
                if len(result.values) > self._max_signals:
                    result = self._cap(result, topic)
                self._on_sample(result, token)
            else:
                self._reject(
                    result,
                    token,
                    topic=topic,
                    machine=machine,
                    payload=payload,
                    arrival_ms=arrival_ms,
                )
        except Exception as exc:  # a consumer bug must not stop the collector
            log.exception("mqtt.callback_failed", topic=topic, error=repr(exc))

    def _cap(self, sample: Sample, topic: str) -> Sample:
        """``sample`` within ``max_signals`` (its machine's configured signals kept); the
        keys left out are counted per machine and logged the first time."""
        machine = sample.machine
        capped, dropped = cap_signals(
            sample, self._max_signals, self._keep.get(machine, frozenset())
        )
        if dropped:
            count = self._signals_dropped.get(machine, 0)
            self._signals_dropped[machine] = count + len(dropped)
            if count == 0:
                log.warning(
                    "mqtt.signals_dropped",
                    machine=machine,
                    topic=topic,
                    dropped=len(dropped),
                    first=[name[:40] for name in dropped[:5]],
                    max_signals=self._max_signals,
                    note="logged once per machine; later ones are only counted (/health)",
                )
        return capped

    def _reject(
        self,
        rejection: Rejection,
        token: AckToken,
        *,
        topic: str,
        machine: str | None,
        payload: bytes,
        arrival_ms: int,
    ) -> None:
        count = self._rejected.get(rejection.reason, 0)
        self._rejected[rejection.reason] = count + 1
        if count == 0:
            log.warning(
                "mqtt.payload_rejected",
                reason=rejection.reason,
                detail=rejection.detail,
                topic=topic,
                machine=machine,
                head=payload[:64],
                note="logged once per reason; later ones are only counted",
            )
        self._on_reject(
            Quarantined(
                topic=topic,
                reason=rejection.reason,
                head=bytes(payload[:QUARANTINE_HEAD_BYTES]),
                arrival_ms=arrival_ms,
                machine=machine,
                detail=rejection.detail,
            ),
            token,
        )
