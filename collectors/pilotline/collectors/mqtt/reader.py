"""paho's MQTT client with a buffered reader for PUBLISH packets: the collector's hot path.

Why: paho 2.x reads a subscriber's stream one packet per ``loop_read()``, with a ``recv(1)``
for the fixed header and for each remaining-length byte, and builds a ``Properties`` object,
an ``MQTTMessage`` and a topic-matcher walk for every message. Measured on the 2-core box
(``benchmarks/micro_hotpath.py mqtt``): 68-78 us of CPU a QoS 1 message in paho against
1.2-1.3 us here, and paho's read path was half of the gateway's CPU.

``BufferedClient.loop_read(max_packets)`` reads what the socket holds (up to 64 KiB a
``recv``, until it would block), splits it into packets itself and hands each QoS 0/1
PUBLISH straight to ``on_publish_raw(topic, payload, mid, qos)`` as bytes. Every other
packet (CONNACK, SUBACK, PINGRESP, DISCONNECT, PUBACK of our own publishes, QoS 2 flows)
goes to paho's own ``_packet_handle`` exactly as paho's reader would have passed it, so the
protocol state machine stays paho's. At most ``max_packets`` packets are handled per call;
the rest stays buffered and ``buffered_packet()`` says so (the socket will not signal those
bytes again, so the caller must come back for them). ``ack_many`` queues the PUBACKs of one
commit as one write.

MQTT 5 PUBLISH properties are skipped: the collector uses none of them, and the one that
would change the meaning of a packet (Topic Alias) is only sent to a client that announced
a Topic Alias Maximum, which this one does not.

It uses paho internals (``_in_packet``, ``_packet_handle``, ``_out_packet``, ``_sock``,
``_loop_rc_handle``, ``_msgtime_mutex``) of paho-mqtt 2.1/2.2 (pinned ``<3``);
``tests/collectors/test_mqtt_reader.py`` checks it against paho's own reading of the same bytes.
"""

from __future__ import annotations

import ssl
import struct
import time
from collections.abc import Callable, Iterable
from typing import TYPE_CHECKING, Any

import paho.mqtt.client as paho
from paho.mqtt.enums import MQTTErrorCode, MQTTProtocolVersion
from paho.mqtt.exception import MalformedPacket

if TYPE_CHECKING:
    from paho.mqtt.client import _InPacket

__all__ = ["BufferedClient", "RawPublish"]

RawPublish = Callable[[bytes, bytes, int, int], None]
"""``(topic, payload, mid, qos)`` of one received QoS 0/1 PUBLISH."""

_RECV_BYTES = 65_536
_PUBLISH = 0x30
_PUBACK = 0x40
_PUBACK_PACK = struct.Struct("!HH").pack  # 0x40 0x02 then the packet id: one PUBACK


def _in_packet(command: int = 0, length: int = 0, body: bytes = b"") -> _InPacket:
    """paho's reader state: idle (no arguments), or holding one whole packet."""
    return {
        "command": command,
        "have_remaining": 1 if command else 0,
        "remaining_count": [],
        "remaining_mult": 1,
        "remaining_length": length,
        "packet": bytearray(body),
        "to_process": 0,
        "pos": 0,
    }


class BufferedClient(paho.Client):
    """A ``paho.mqtt.client.Client`` whose ``loop_read`` is buffered (see the module doc)."""

    on_publish_raw: RawPublish | None = None

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._rbuf = b""
        self._rsock: Any = None
        # A packet larger than one read is gathered in parts and joined once whole (linear,
        # where appending each read to the buffer would copy it over and over).
        self._parts: list[bytes] = []
        self._need = 0
        self._v5 = self._protocol == MQTTProtocolVersion.MQTTv5

    # -- reading ---------------------------------------------------------------------------

    def buffered_packet(self) -> bool:
        """Whether a whole packet waits in the buffer (``loop_read`` stopped at its limit)."""
        return not self._need and self._complete(self._rbuf) > 0

    def loop_read(self, max_packets: int = 1) -> MQTTErrorCode:
        """Handle up to ``max_packets`` packets: those buffered, then what the socket has."""
        sock: Any = self._sock
        if sock is None:
            return MQTTErrorCode.MQTT_ERR_NO_CONN
        if sock is not self._rsock:  # a new connection: nothing of the old one is valid
            self._rsock = sock
            self._rbuf = b""
            self._parts = []
            self._need = 0
        handled = 0
        while True:
            if self._rbuf and not self._need:
                n, rc = self._handle_buffered(max_packets - handled)
                if rc != MQTTErrorCode.MQTT_ERR_SUCCESS:
                    return self._loop_rc_handle(rc)
                handled += n
                if handled >= max_packets or self._sock is not sock:
                    return MQTTErrorCode.MQTT_ERR_SUCCESS
            try:
                data = sock.recv(max(_RECV_BYTES, self._need))
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
            if self._need:
                self._parts.append(data)
                self._need -= len(data)
                if self._need <= 0:
                    self._rbuf = b"".join([self._rbuf, *self._parts])
                    self._parts = []
                    self._need = 0
            else:
                self._rbuf = self._rbuf + data if self._rbuf else data

    @staticmethod
    def _complete(buf: bytes) -> int:
        """End offset of the first packet if it is whole in ``buf``, else 0 (-1: malformed)."""
        size = len(buf)
        length = 0
        shift = 0
        i = 1
        while True:
            if i >= size:
                return 0
            byte = buf[i]
            length |= (byte & 0x7F) << shift
            i += 1
            if byte < 0x80:
                break
            shift += 7
            if shift > 21:
                return -1
        end = i + length
        return end if end <= size else 0

    def _handle_buffered(self, limit: int) -> tuple[int, MQTTErrorCode]:
        """Handle up to ``limit`` whole packets from the buffer; keep the rest."""
        buf = self._rbuf
        size = len(buf)
        pos = 0
        handled = 0
        deliver = self.on_publish_raw
        v5 = self._v5
        sock = self._sock
        rc = MQTTErrorCode.MQTT_ERR_SUCCESS
        try:
            while handled < limit and pos < size:
                # Fixed header: type and flags, then the remaining length (1-4 bytes).
                header = buf[pos]
                i = pos + 1
                length = 0
                shift = 0
                while True:
                    if i >= size:
                        return handled, rc  # the rest of the header is still on its way
                    byte = buf[i]
                    length |= (byte & 0x7F) << shift
                    i += 1
                    if byte < 0x80:
                        break
                    shift += 7
                    if shift > 21:
                        return handled, MQTTErrorCode.MQTT_ERR_PROTOCOL
                end = i + length
                if end > size:
                    if end - size > _RECV_BYTES:
                        self._need = end - size  # a large packet: gather the rest in parts
                    return handled, rc
                qos = (header >> 1) & 0x03
                if header & 0xF0 == _PUBLISH and qos < 2 and deliver is not None:
                    # Topic (length-prefixed), packet id (QoS 1), properties (MQTT 5), payload.
                    if length < 2:
                        return handled, MQTTErrorCode.MQTT_ERR_PROTOCOL
                    k = i + 2 + ((buf[i] << 8) | buf[i + 1])
                    topic = buf[i + 2 : k]
                    mid = 0
                    if qos:
                        mid = (buf[k] << 8) | buf[k + 1] if k + 2 <= end else -1
                        k += 2
                    if v5 and k < end:
                        plen = 0
                        shift = 0
                        while True:
                            byte = buf[k]
                            plen |= (byte & 0x7F) << shift
                            k += 1
                            if byte < 0x80 or k >= end or shift > 14:
                                break
                            shift += 7
                        k += plen
                    elif v5:
                        k = end + 1  # MQTT 5 requires the properties length
                    if k > end or mid < 0:
                        return handled, MQTTErrorCode.MQTT_ERR_PROTOCOL
                    pos = end
                    handled += 1
                    deliver(topic, buf[k:end], mid, qos)
                    if qos == 1 and not self._manual_ack:
                        self._send_puback(mid)
                    if self._sock is not sock:  # the callback's acks found the socket dead
                        return handled, rc
                else:
                    # Anything else is paho's, as its own reader would have handed it over.
                    self._in_packet = _in_packet(header, length, buf[i:end])
                    pos = end
                    handled += 1
                    try:
                        rc = self._packet_handle()
                    except MalformedPacket as exc:
                        self._easy_log(paho.MQTT_LOG_DEBUG, "Received malformed packet: %s", exc)
                        rc = MQTTErrorCode.MQTT_ERR_PROTOCOL
                    finally:
                        self._in_packet = _in_packet()
                    if rc != MQTTErrorCode.MQTT_ERR_SUCCESS or self._sock is not sock:
                        return handled, rc
            return handled, rc
        finally:
            self._rbuf = buf[pos:] if pos else buf

    # -- acknowledging ---------------------------------------------------------------------

    def ack_many(self, mids: Iterable[int]) -> None:
        """PUBACK each QoS 1 packet id, in order, queued as one write and sent at once
        (paho's ``ack`` queues one packet per id and waits for the socket's writable
        event)."""
        data = b"".join([_PUBACK_PACK(0x4002, mid) for mid in mids])
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
