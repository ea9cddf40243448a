"""MQTT 5 packets, sans I/O: bytes in, packets out (in the manner of h11). No sockets, no paho.

A ``PacketReader`` is fed whatever the socket gave (``feed``) and hands back whole packets
one at a time (``next_packet``), or ``None`` when it needs more bytes. It knows the fixed
header of every packet (type and flags, then the remaining length: a variable byte integer
of 1 to 4 bytes, MQTT 5 sections 2.1 and 1.5.5) and the layout of one packet kind, the
collector's hot path: a QoS 0 or 1 PUBLISH comes out as ``Publish`` (topic, payload, packet
id, QoS). Every other packet, QoS 2 PUBLISH included, comes out whole as ``Packet`` for a
protocol engine (paho) to handle.

PUBLISH properties are skipped: the collector uses none of them, and the one that would
change the meaning of a packet (Topic Alias) is only sent to a client that announced a Topic
Alias Maximum, which ours does not.

Cost, since this runs once per message: a packet is one plain tuple plus the slices of its
topic and payload (``Publish`` is a bare tuple, not a ``NamedTuple``, whose construction
costs measurably more: benchmarks/README.md; tell the two kinds apart with
``isinstance(packet, Packet)``); the buffer is cut once per ``feed``, not once per packet;
and a packet longer than what is buffered is gathered in parts and joined once whole
(linear, where appending each read to the buffer would copy it over and over).

A stream that breaks the framing or a PUBLISH's layout, or announces a packet longer than
the reader's ``max_length``, raises ``PacketError``; the reader is then stuck at the bad
packet and the connection must go.
"""

from __future__ import annotations

import struct
from collections.abc import Iterable
from typing import Final, NamedTuple, TypeAlias

__all__ = [
    "MAX_REMAINING_LENGTH",
    "Packet",
    "PacketError",
    "PacketReader",
    "Publish",
    "encode_pubacks",
    "encode_publish",
    "encode_remaining_length",
]

MAX_REMAINING_LENGTH: Final = 268_435_455  # four 7-bit groups
_PUBLISH: Final = 0x30
_PUBACK_PACK: Final = struct.Struct("!HH").pack  # 0x40 0x02, then the packet id


class PacketError(ValueError):
    """The stream breaks MQTT's framing or a PUBLISH's layout (the connection must go)."""


Publish: TypeAlias = tuple[bytes, bytes, int, int]
"""A QoS 0 or 1 PUBLISH: ``(topic, payload, mid, qos)``; ``mid`` (the packet identifier) is
0 at QoS 0, which has none."""


class Packet(NamedTuple):
    """Any other packet, whole, for a protocol engine to handle."""

    header: int  # first byte of the fixed header: type (high nibble) and flags
    body: bytes  # the rest after the remaining length: variable header and payload


def _varint(buf: bytes, i: int, stop: int) -> tuple[int, int]:
    """The variable byte integer at ``buf[i]`` (7 bits a byte, least significant first):
    ``(value, index after it)``, or ``(0, -1)`` when it runs on past ``stop``."""
    value = 0
    shift = 0
    while i < stop:
        byte = buf[i]
        value |= (byte & 0x7F) << shift
        i += 1
        if byte < 0x80:
            return value, i
        shift += 7
        if shift > 21:
            raise PacketError("a variable byte integer longer than 4 bytes")
    return 0, -1


class PacketReader:
    """Splits a byte stream from the broker into packets (see the module doc)."""

    __slots__ = ("_buf", "_max_length", "_missing", "_parts", "_pos")

    def __init__(self, max_length: int = MAX_REMAINING_LENGTH) -> None:
        """``max_length``: the longest remaining length accepted; a packet announcing more
        raises ``PacketError`` before any of it is gathered (the broker was asked, with the
        CONNECT's Maximum Packet Size, never to send one)."""
        self._max_length = max_length
        self._buf = b""
        self._pos = 0  # start of the first packet not yet handed out
        # A packet whose header is read but whose rest is not: the reads that bring the
        # rest wait in ``_parts`` until ``_missing`` bytes have come, then are joined once.
        self._parts: list[bytes] = []
        self._missing = 0

    @property
    def missing(self) -> int:
        """Bytes still to come for the packet being gathered (0: none is), so that the
        caller can read it in one go."""
        return self._missing

    def feed(self, data: bytes) -> None:
        """Append what the socket gave."""
        if self._missing:
            self._parts.append(data)
            self._missing -= len(data)
            if self._missing <= 0:
                self._buf = b"".join([self._buf[self._pos :], *self._parts])
                self._pos = 0
                self._parts = []
                self._missing = 0
        elif self._pos >= len(self._buf):
            self._buf = data  # the common case: every packet handed out, no copy
            self._pos = 0
        else:
            self._buf = self._buf[self._pos :] + data
            self._pos = 0

    def has_packet(self) -> bool:
        """Whether a whole packet waits, for a caller that stopped taking them."""
        if self._missing:
            return False
        buf = self._buf
        size = len(buf)
        try:
            length, i = _varint(buf, self._pos + 1, size)
        except PacketError:
            return False  # not whole either: ``next_packet`` will raise
        return i > 0 and i + length <= size

    def next_packet(self) -> Publish | Packet | None:
        """The next whole packet, or ``None`` until more bytes are fed.

        Raises ``PacketError`` on a malformed packet (and again on every call after)."""
        if self._missing:
            return None
        buf = self._buf
        pos = self._pos
        size = len(buf)
        if pos + 1 >= size:
            return None
        header = buf[pos]
        # The remaining length, as ``_varint`` decodes it but inline (a call per packet
        # costs more than all of this); one byte for a body under 128 bytes.
        length = buf[pos + 1]
        i = pos + 2
        if length > 0x7F:
            length &= 0x7F
            shift = 7
            while True:
                if i >= size:
                    return None  # the rest of the header is still on its way
                byte = buf[i]
                length |= (byte & 0x7F) << shift
                i += 1
                if byte < 0x80:
                    break
                shift += 7
                if shift > 21:
                    raise PacketError("a remaining length longer than 4 bytes")
        if length > self._max_length:
            raise PacketError(f"a packet of {length} bytes, over the Maximum Packet Size")
        end = i + length
        if end > size:
            self._missing = end - size
            return None
        qos = (header >> 1) & 0x03
        if header & 0xF0 != _PUBLISH or qos > 1:
            self._pos = end
            return Packet(header, buf[i:end])
        # PUBLISH: topic (2-byte length first), packet id (QoS 1 only), properties, payload.
        if length < 2:
            raise PacketError("a PUBLISH too short for its topic length")
        k = i + 2 + ((buf[i] << 8) | buf[i + 1])
        topic = buf[i + 2 : k]
        mid = 0
        if qos:
            if k + 2 > end:
                raise PacketError("a PUBLISH that ends before its packet id")
            mid = (buf[k] << 8) | buf[k + 1]
            k += 2
        if k >= end:
            raise PacketError("a PUBLISH that ends before its properties length")
        skip = buf[k]
        k += 1
        if skip > 0x7F:
            skip, k = _varint(buf, k - 1, end)
            if k < 0:
                raise PacketError("a PUBLISH whose properties length runs past its end")
        k += skip
        if k > end:
            raise PacketError("a PUBLISH whose properties run past its end")
        self._pos = end
        return (topic, buf[k:end], mid, qos)


# -- writing ---------------------------------------------------------------------------------


def encode_pubacks(mids: Iterable[int]) -> bytes:
    """One PUBACK per packet id, in order, as one write (reason code omitted: success)."""
    return b"".join([_PUBACK_PACK(0x4002, mid) for mid in mids])


def encode_remaining_length(n: int) -> bytes:
    """``n`` as a variable byte integer (the inverse of the reader's decoding)."""
    if not 0 <= n <= MAX_REMAINING_LENGTH:
        raise ValueError(f"{n} is outside 0..{MAX_REMAINING_LENGTH}")
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def encode_publish(
    topic: bytes, payload: bytes, *, qos: int, mid: int = 0, properties: bytes = b""
) -> bytes:
    """A PUBLISH as a broker sends it (the reader's inverse; tests and benchmarks build
    their streams with it)."""
    body = b"".join(
        [
            len(topic).to_bytes(2, "big"),
            topic,
            mid.to_bytes(2, "big") if qos else b"",
            encode_remaining_length(len(properties)),
            properties,
            payload,
        ]
    )
    return bytes([_PUBLISH | (qos << 1)]) + encode_remaining_length(len(body)) + body
