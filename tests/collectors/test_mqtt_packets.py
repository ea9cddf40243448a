"""The pure MQTT 5 packet reader: framing boundaries, PUBLISH layout, chunking invariance."""

from __future__ import annotations

import itertools

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from pilotline.collectors.mqtt.packets import (
    MAX_REMAINING_LENGTH,
    Packet,
    PacketError,
    PacketReader,
    Publish,
    encode_pubacks,
    encode_publish,
    encode_remaining_length,
)

Out = Publish | Packet

PINGRESP = b"\xd0\x00"
SUBACK = b"\x90\x04\x00\x01\x00\x01"  # packet id 1, no properties, granted QoS 1
# Message Expiry Interval (0x02, four bytes) and a User Property (0x26, two strings).
PROPS = b"\x02\x00\x00\x00\x3c" + b"\x26\x00\x01k\x00\x01v"


def drain(reader: PacketReader) -> list[Out]:
    """Every packet the reader holds whole, in order."""
    out: list[Out] = []
    while (packet := reader.next_packet()) is not None:
        out.append(packet)
    return out


def read(*chunks: bytes) -> list[Out]:
    """The packets of ``chunks`` fed one by one, taking the whole ones after each."""
    reader = PacketReader()
    out: list[Out] = []
    for chunk in chunks:
        reader.feed(chunk)
        out += drain(reader)
    assert not reader.has_packet()
    return out


def other(header: int, body: bytes) -> bytes:
    """Any packet but a QoS 0/1 PUBLISH, framed."""
    return bytes([header]) + encode_remaining_length(len(body)) + body


# -- remaining length ----------------------------------------------------------------------

# The boundaries of the 1..4-byte encodings (MQTT 5, 1.5.5).
LENGTHS = [
    (0, b"\x00"),
    (127, b"\x7f"),
    (128, b"\x80\x01"),
    (16_383, b"\xff\x7f"),
    (16_384, b"\x80\x80\x01"),
    (2_097_151, b"\xff\xff\x7f"),
    (2_097_152, b"\x80\x80\x80\x01"),
    (MAX_REMAINING_LENGTH, b"\xff\xff\xff\x7f"),
]


@pytest.mark.parametrize(("n", "encoded"), LENGTHS)
def test_remaining_length_encoding(n: int, encoded: bytes) -> None:
    assert encode_remaining_length(n) == encoded


@pytest.mark.parametrize("n", [-1, MAX_REMAINING_LENGTH + 1])
def test_remaining_length_out_of_range(n: int) -> None:
    with pytest.raises(ValueError, match="outside"):
        encode_remaining_length(n)


@pytest.mark.parametrize(("n", "encoded"), LENGTHS[:-1])
def test_a_packet_of_each_remaining_length_size(n: int, encoded: bytes) -> None:
    body = bytes(i % 251 for i in range(n))
    assert read(b"\xb0" + encoded + body + PINGRESP) == [Packet(0xB0, body), Packet(0xD0, b"")]


def test_the_largest_remaining_length_is_read_from_four_bytes() -> None:
    reader = PacketReader()
    reader.feed(b"\xb0\xff\xff\xff\x7f" + b"x" * 10)
    assert reader.next_packet() is None
    assert reader.missing == MAX_REMAINING_LENGTH - 10


@pytest.mark.parametrize("header", [b"\x30", b"\xb0"])
@pytest.mark.parametrize(
    "length",
    [b"\xff\xff\xff\xff\x01", b"\x80\x80\x80\x80\x00", b"\xff\xff\xff\xff"],  # the last: cut short
)
def test_a_remaining_length_over_four_bytes_is_malformed(header: bytes, length: bytes) -> None:
    reader = PacketReader()
    reader.feed(PINGRESP + header + length)
    assert reader.next_packet() == Packet(0xD0, b"")
    assert not reader.has_packet()
    with pytest.raises(PacketError, match="longer than 4 bytes"):
        reader.next_packet()
    with pytest.raises(PacketError):  # stuck at the bad packet: the connection must go
        reader.next_packet()


# -- PUBLISH -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("data", "expected"),
    [
        # QoS 0: topic length, topic, properties length 0, payload.
        (b"\x30\x07\x00\x01t\x00abc", (b"t", b"abc", 0, 0)),
        # QoS 1: the packet id (300) after the topic.
        (b"\x32\x09\x00\x01t\x01\x2c\x00abc", (b"t", b"abc", 300, 1)),
        # DUP and RETAIN flags change nothing here.
        (b"\x3b\x09\x00\x01t\xff\xff\x00abc", (b"t", b"abc", 65_535, 1)),
        (b"\x39\x07\x00\x01t\x00abc", (b"t", b"abc", 0, 0)),
        # Empty topic (a Topic Alias would fill it: never announced), empty payload.
        (b"\x30\x03\x00\x00\x00", (b"", b"", 0, 0)),
        (b"\x32\x05\x00\x00\x00\x07\x00", (b"", b"", 7, 1)),
        # Properties are skipped, whatever they hold.
        (b"\x32\x0e\x00\x01t\x00\x01\x05\x02\x00\x00\x00\x3cabc", (b"t", b"abc", 1, 1)),
        # QoS 2 and the reserved QoS 3 go out whole, for paho.
        (b"\x34\x09\x00\x01t\x00\x09\x00abc", Packet(0x34, b"\x00\x01t\x00\x09\x00abc")),
        (b"\x36\x03\x00\x00\x00", Packet(0x36, b"\x00\x00\x00")),
    ],
)
def test_publish_layout(data: bytes, expected: Out) -> None:
    assert read(data) == [expected]


@pytest.mark.parametrize("size", [0, 1, 5, 127, 128, 300, 16_383, 16_384, 70_000])
@pytest.mark.parametrize("qos", [0, 1])
def test_properties_of_any_length_are_skipped(size: int, qos: int) -> None:
    props = bytes(i % 256 for i in range(size))
    data = encode_publish(b"a/b", b'{"v": 1}', qos=qos, mid=9, properties=props)
    assert read(data) == [(b"a/b", b'{"v": 1}', 9 if qos else 0, qos)]


@pytest.mark.parametrize(
    ("data", "match"),
    [
        (b"\x30\x00", "too short"),
        (b"\x32\x01\x00", "too short"),
        (b"\x30\x03\x00\x01t", "before its properties length"),  # no properties length
        (b"\x32\x05\x00\xc8abc", "before its packet id"),  # topic runs past the end
        (b"\x32\x04\x00\x01t\x00", "before its packet id"),  # half a packet id
        (b"\x30\x05\x00\xc8abc", "before its properties length"),
        (b"\x30\x05\x00\x01t\x05x", "properties run past its end"),
        (b"\x30\x04\x00\x01t\x80", "properties length runs past its end"),
        (b"\x30\x05\x00\x01t\x80\x80", "properties length runs past its end"),
        (b"\x30\x08\x00\x01t\xff\xff\xff\xff\x01", "longer than 4 bytes"),
    ],
)
def test_a_malformed_publish(data: bytes, match: str) -> None:
    reader = PacketReader()
    reader.feed(encode_publish(b"ok", b"1", qos=1, mid=1) + data + PINGRESP)
    assert reader.next_packet() == (b"ok", b"1", 1, 1)
    with pytest.raises(PacketError, match=match):
        reader.next_packet()


# -- chunking ------------------------------------------------------------------------------

STREAM = [
    (encode_publish(b"t/a", b"1", qos=0), (b"t/a", b"1", 0, 0)),
    (encode_publish(b"t/b", b"22", qos=1, mid=513, properties=PROPS), (b"t/b", b"22", 513, 1)),
    (PINGRESP, Packet(0xD0, b"")),
    (encode_publish(b"t/c", b"x" * 200, qos=1, mid=2), (b"t/c", b"x" * 200, 2, 1)),  # 2-byte
    (SUBACK, Packet(0x90, SUBACK[2:])),
    (encode_publish(b"t/d", b"", qos=1, mid=3), (b"t/d", b"", 3, 1)),
]
STREAM_BYTES = b"".join(data for data, _ in STREAM)
STREAM_PACKETS = [packet for _, packet in STREAM]


def test_several_packets_in_one_chunk() -> None:
    assert read(STREAM_BYTES) == STREAM_PACKETS


def test_a_stream_split_at_every_byte_offset() -> None:
    for cut in range(len(STREAM_BYTES) + 1):
        assert read(STREAM_BYTES[:cut], STREAM_BYTES[cut:]) == STREAM_PACKETS, cut


def test_a_stream_one_byte_at_a_time() -> None:
    assert read(*(bytes([b]) for b in STREAM_BYTES)) == STREAM_PACKETS


def test_the_reader_stops_anywhere_and_goes_on_from_there() -> None:
    reader = PacketReader()
    reader.feed(STREAM_BYTES[:-1])
    assert reader.next_packet() == STREAM_PACKETS[0]
    assert reader.has_packet()
    reader.feed(STREAM_BYTES[-1:])  # fed while packets still wait
    assert drain(reader) == STREAM_PACKETS[1:]
    assert not reader.has_packet()


@pytest.mark.parametrize(
    ("data", "whole"),
    [
        (b"", False),
        (b"\x32", False),
        (b"\x32\x80", False),  # the remaining length goes on
        (b"\x32\x09\x00\x01t\x01", False),  # half the body
        (b"\x32\x09\x00\x01t\x01\x2c\x00abc", True),
        (b"\x32\xff\xff\xff\xff\x01", False),  # malformed is not whole
    ],
)
def test_has_packet(data: bytes, whole: bool) -> None:
    reader = PacketReader()
    reader.feed(data)
    assert reader.has_packet() is whole


def test_a_large_packet_is_gathered_in_parts() -> None:
    payload = bytes(range(256)) * 1000
    data = encode_publish(b"t/big", payload, qos=1, mid=7) + PINGRESP
    reader = PacketReader()
    reader.feed(data[:100])
    assert reader.next_packet() is None
    assert reader.missing == len(data) - len(PINGRESP) - 100
    for start in range(100, len(data) - 2, 65_536):
        assert reader.next_packet() is None
        assert not reader.has_packet()
        reader.feed(data[start : min(start + 65_536, len(data) - 2)])
    assert reader.missing == 0
    reader.feed(data[-2:])
    assert drain(reader) == [(b"t/big", payload, 7, 1), Packet(0xD0, b"")]


def test_a_packet_over_the_maximum_length_is_refused_from_its_header() -> None:
    """A broker that ignores the CONNECT's Maximum Packet Size: the 100 MB packet is refused
    from its five header bytes, before any of its body is gathered."""
    fits = encode_publish(b"t", b"x" * 990, qos=1, mid=1)
    reader = PacketReader(max_length=len(fits) - 3)  # just fits: fixed header 1 + 2 bytes
    reader.feed(fits)
    assert reader.next_packet() == (b"t", b"x" * 990, 1, 1)
    reader.feed(b"\x32" + encode_remaining_length(100_000_000))
    with pytest.raises(PacketError, match="over the Maximum Packet Size"):
        reader.next_packet()
    assert reader.missing == 0


# -- writing -------------------------------------------------------------------------------


def test_pubacks() -> None:
    assert encode_pubacks([]) == b""
    assert encode_pubacks([1, 300, 65_535]) == (
        b"\x40\x02\x00\x01" + b"\x40\x02\x01\x2c" + b"\x40\x02\xff\xff"
    )


# -- any chunking, the same packets ----------------------------------------------------------

publishes = st.builds(
    lambda topic, payload, qos, mid, props: (
        encode_publish(topic, payload, qos=qos, mid=mid, properties=props),
        (topic, payload, mid if qos else 0, qos),
    ),
    st.binary(max_size=40),
    st.binary(max_size=300),
    st.sampled_from([0, 1]),
    st.integers(1, 65_535),
    st.binary(max_size=200),
)
others = st.builds(
    lambda header, body: (other(header, body), Packet(header, body)),
    # CONNACK, PUBACK, PUBREL, SUBACK, UNSUBACK, PINGRESP, DISCONNECT, AUTH; QoS 2 PUBLISH
    st.sampled_from([0x20, 0x40, 0x62, 0x90, 0xB0, 0xD0, 0xE0, 0xF0, 0x34, 0x3C]),
    st.binary(max_size=200),
)


@settings(max_examples=200, deadline=None)
@given(
    packets=st.lists(publishes | others, min_size=1, max_size=30),
    cuts=st.lists(st.integers(0, 20_000), max_size=20),
)
def test_any_chunking_yields_the_same_packets(
    packets: list[tuple[bytes, Out]], cuts: list[int]
) -> None:
    data = b"".join(encoded for encoded, _ in packets)
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    chunks = [data[a:b] for a, b in itertools.pairwise(points)]
    expected = [packet for _, packet in packets]
    assert read(data) == expected
    assert read(*chunks) == expected
