"""paho's MQTT client with a buffered reader for PUBLISH packets: the collector's hot path.

Why: paho 2.x reads a subscriber's stream one packet per ``loop_read()``, with a ``recv(1)``
for the fixed header and for each remaining-length byte, and builds a ``Properties`` object,
an ``MQTTMessage`` and a topic-matcher walk for every message; its read path was half of the
gateway's CPU (measured: benchmarks/README.md, ``micro_hotpath.py mqtt``).

``BufferedClient.loop_read(max_packets)`` reads what the socket holds (up to 64 KiB a
``recv``, until it would block) and feeds it to a ``packets.PacketReader``, which splits it
into packets. Each QoS 0/1 PUBLISH goes straight to ``on_publish_raw(topic, payload, mid,
qos)`` as bytes (set it before the first read). Every other packet (CONNACK, SUBACK,
PINGRESP, DISCONNECT, PUBACK of our own publishes, QoS 2 flows) goes to paho's own
``_packet_handle`` exactly as paho's reader would have passed it, so the protocol state
machine stays paho's. At most ``max_packets`` packets are handled per call; the rest stays
buffered and ``buffered_packet()`` says so (the socket will not signal those bytes again, so
the caller must come back for them). ``ack_many`` queues the PUBACKs of one commit as one
write.

MQTT 5 only (the collector always connects with it): the constructor refuses another
protocol version.

It uses paho internals (``_in_packet``, ``_packet_handle``, ``_out_packet``, ``_sock``,
``_loop_rc_handle``, ``_msgtime_mutex``) of paho-mqtt 2.1/2.2 (pinned ``<3``);
``tests/collectors/test_mqtt_reader.py`` checks it against paho's own reading of the same bytes.
"""

from __future__ import annotations

import ssl
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

from pilotline.collectors.mqtt.packets import (
    MAX_REMAINING_LENGTH,
    Packet,
    PacketError,
    PacketReader,
    encode_pubacks,
)

if TYPE_CHECKING:
    from paho.mqtt.client import _InPacket

__all__ = ["BufferedClient", "RawPublish"]

RawPublish = Callable[[bytes, bytes, int, int], None]
"""``(topic, payload, mid, qos)`` of one received QoS 0/1 PUBLISH."""

_RECV_BYTES = 65_536
_PUBACK = 0x40


def _in_packet(command: int = 0, body: bytes = b"") -> _InPacket:
    """paho's reader state: idle (no arguments), or holding one whole packet."""
    return {
        "command": command,
        "have_remaining": 1 if command else 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": len(body),
        "packet": bytearray(body),
        "to_process": 0,
        "pos": 0,
    }


def _publish_raw_unset(_topic: bytes, _payload: bytes, _mid: int, _qos: int) -> None:
    """A PUBLISH with nowhere to go: a programming error, not a message to drop."""
    raise RuntimeError("BufferedClient: set on_publish_raw before reading")


class BufferedClient(paho.Client):
    """A ``paho.mqtt.client.Client`` whose ``loop_read`` is buffered (see the module doc)."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        if self._protocol != MQTTProtocolVersion.MQTTv5:
            raise ValueError("BufferedClient reads MQTT 5 only (protocol=paho.MQTTv5)")
        self.on_publish_raw: RawPublish = _publish_raw_unset
        self.max_packet_size = MAX_REMAINING_LENGTH
        """Longest packet body read; a longer one ends the connection (protocol error)."""
        self._packets = PacketReader()
        self._rsock: Any = None
        # paho's errors (a failed socket read, a callback that raised) reach the log through
        # the standard library's ``paho.mqtt.client`` logger, rendered as the gateway's lines;
        # its debug lines stop at the logger's level check.
        self.enable_logger()

    # -- reading ---------------------------------------------------------------------------

    def buffered_packet(self) -> bool:
        """Whether a whole packet waits in the buffer (``loop_read`` stopped at its limit)."""
        return self._packets.has_packet()

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle up to ``max_packets`` packets: those buffered, then what the socket has."""
        sock: Any = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if sock is not self._rsock:  # a new connection: nothing of the old one is valid
            self._rsock = sock
            self._packets = PacketReader(self.max_packet_size)
        packets = self._packets
        recv = sock.recv
        handled = 0
        while True:
            n, rc = self._handle_buffered(max_packets - handled)
            if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                return self._loop_rc_handle(rc)
            handled += n
            if handled >= max_packets or self._sock is not sock:
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            try:
                data = recv(max(_RECV_BYTES, packets.missing))
            except (BlockingIOError, ssl.SSLWantReadError):
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except ssl.SSLWantWriteError:
                self._call_socket_register_write()
                return MQTTErrorCode.MQTT_ERR_SUCCESS
            except OSError as err:
                self._easy_log(paho.MQTT_LOG_ERR, "failed to receive on socket: %s", err)
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            if not data:
                return self._loop_rc_handle(MQTTErrorCode.MQTT_ERR_CONN_LOST)
            with self._msgtime_mutex:
                self._last_bytes_received = time.monotonic()
            packets.feed(data)

    def _handle_buffered(self, limit: int) -> tuple[int, MQTTErrorCode]:
        """Handle up to ``limit`` whole packets from the buffer; keep the rest."""
        next_packet = self._packets.next_packet
        deliver = self.on_publish_raw
        sock = self._sock
        handled = 0
        while handled < limit:
            try:
                packet = next_packet()
            except PacketError:
                return handled, MQTTErrorCode.MQTT_ERR_PROTOCOL
            if packet is None:
                break  # the rest is still on its way
            handled += 1
            if isinstance(packet, Packet):
                rc = self._to_paho(packet.header, packet.body)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is not sock:
                    return handled, rc
            else:  # a QoS 0/1 PUBLISH: (topic, payload, mid, qos)
                deliver(*packet)
                if packet[3] and not self._manual_ack:
                    self._send_puback(packet[2])
                if self._sock is not sock:  # the callback's acks found the socket dead
                    break
        return handled, MQTTErrorCode.MQTT_ERR_SUCCESS

    def _to_paho(self, header: int, body: bytes) -> MQTTErrorCode:
        """One whole packet to paho, as its own reader would have handed it over."""
        self._in_packet = _in_packet(header, body)
        try:
            return self._packet_handle()
        except MalformedPacket as exc:
            self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
            return MQTTErrorCode.MQTT_ERR_PROTOCOL
        finally:
            self._in_packet = _in_packet()

    # -- acknowledging ---------------------------------------------------------------------

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK each QoS 1 packet id, in order, queued as one write and sent at once
        (paho's ``ack`` queues one packet per id and waits for the socket's writable
        event)."""
        data = encode_pubacks(mids)
        if not data or self._sock is None:
            return
        self._out_packet.append(
            {
                "command": _PUBACK,
                "mid": 0,
                "qos": 0,
                "pos": 0,
                "to_process": len(data),
                "packet": data,
                "info": None,
            }
        )
        self.loop_write()  # registers for the writable event only if the socket is full
