"""BufferedClient reads what paho's own reader reads, however the bytes arrive."""

from __future__ import annotations

import contextlib
import itertools
import logging
import select
import socket
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import paho.mqtt.client as paho
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from paho.mqtt.enums import CallbackAPIVersion, MQTTErrorCode

from pilotline.collectors.mqtt.packets import encode_publish
from pilotline.collectors.mqtt.reader import BufferedClient

Message = tuple[str, bytes, int, int]


def publish(topic: str, payload: bytes, *, qos: int, mid: int = 0, props: bytes = b"") -> bytes:
    """An MQTT 5 PUBLISH packet (paho's reading of it checks the encoder too)."""
    return encode_publish(topic.encode(), payload, qos=qos, mid=mid, properties=props)


PINGRESP = b"\xd0\x00"
# Message Expiry Interval (0x02, four bytes) and a User Property (0x26, two strings).
PROPS = b"\x02\x00\x00\x00\x3c" + b"\x26\x00\x01k\x00\x01v"


@contextlib.contextmanager
def _client(cls: type[paho.Client]) -> Iterator[tuple[Any, socket.socket, list[Message]]]:
    rsock, wsock = socket.socketpair()
    rsock.setblocking(False)
    client = cls(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv5)
    client.manual_ack_set(True)
    client._sock = rsock
    got: list[Message] = []

    def on_message(_c: Any, _u: Any, msg: paho.MQTTMessage) -> None:
        got.append((msg.topic, bytes(msg.payload), msg.mid, msg.qos))

    def on_raw(topic: bytes, payload: bytes, mid: int, qos: int) -> None:
        got.append((topic.decode(), payload, mid, qos))

    client.on_message = on_message
    if isinstance(client, BufferedClient):
        client.on_publish_raw = on_raw
    try:
        yield client, wsock, got
    finally:
        rsock.close()
        wsock.close()


def _read(
    client: Any, wsock: socket.socket, chunks: list[bytes], until: Callable[[], bool]
) -> None:
    """Write ``chunks`` one by one from a thread; read until ``until()`` (5 s at most)."""

    def write() -> None:
        for chunk in chunks:
            wsock.sendall(chunk)
            time.sleep(0.001)

    writer = threading.Thread(target=write)
    writer.start()
    deadline = time.monotonic() + 5.0
    rsock = client._sock
    while not until() and time.monotonic() < deadline:
        select.select([rsock], [], [], 0.05)
        if isinstance(client, BufferedClient):
            client.loop_read(1000)
        else:
            client.loop_read()  # one packet per call
    writer.join()


def _split(data: bytes, cuts: list[int]) -> list[bytes]:
    points = sorted({c % (len(data) + 1) for c in cuts} | {0, len(data)})
    return [data[a:b] for a, b in itertools.pairwise(points) if b > a]


messages_strategy = st.lists(
    st.tuples(
        st.sampled_from(["t/a", "plant/zone-1/m-0001/telemetry", "ü/ß", ""]),
        st.binary(max_size=300),
        st.sampled_from([0, 1]),
        st.integers(1, 65535),
        st.booleans(),
    ),
    min_size=1,
    max_size=30,
)


@settings(max_examples=60, deadline=None)
@given(messages=messages_strategy, cuts=st.lists(st.integers(0, 20_000), max_size=12))
def test_the_same_messages_as_paho_in_any_chunking(
    messages: list[tuple[str, bytes, int, int, bool]], cuts: list[int]
) -> None:
    data = b"".join(
        publish(t, p, qos=q, mid=m, props=PROPS if with_props else b"")
        for t, p, q, m, with_props in messages
    )
    expected = [(t, p, m if q else 0, q) for t, p, q, m, _ in messages]
    chunks = _split(data, cuts)

    with _client(BufferedClient) as (buffered, bsock, bgot):
        _read(buffered, bsock, chunks, lambda: len(bgot) >= len(expected))
        assert bgot == expected
        assert not buffered.buffered_packet()

    with _client(paho.Client) as (plain, psock, pgot):
        _read(plain, psock, [data], lambda: len(pgot) >= len(expected))
        assert pgot == expected  # the reference agrees with the expectation too


def test_a_large_payload_across_many_reads() -> None:
    payload = bytes(range(256)) * 1000  # 256,000 bytes: several 64 KiB reads
    data = publish("t/big", payload, qos=1, mid=7) + publish("t/small", b"{}", qos=1, mid=8)
    with _client(BufferedClient) as (client, wsock, got):
        _read(client, wsock, _split(data, [1, 2, 3, 70_000, 200_000]), lambda: len(got) >= 2)
        assert got == [("t/big", payload, 7, 1), ("t/small", b"{}", 8, 1)]


def test_a_packet_of_megabytes_is_gathered_in_parts() -> None:
    payload = bytes(range(256)) * 12_000  # 3,072,000 bytes
    data = (
        publish("t/small", b"1", qos=1, mid=1)
        + publish("t/huge", payload, qos=1, mid=2)
        + publish("t/after", b"2", qos=1, mid=3)
    )
    with _client(BufferedClient) as (client, wsock, got):
        cuts = [1, 5, 20, 100_000, 1_000_000, 2_500_000, len(data) - 3]
        _read(client, wsock, _split(data, cuts), lambda: len(got) >= 3)
        assert got == [("t/small", b"1", 1, 1), ("t/huge", payload, 2, 1), ("t/after", b"2", 3, 1)]
        assert client._packets.missing == 0
        assert not client.buffered_packet()


def test_other_packets_go_to_paho() -> None:
    with _client(BufferedClient) as (client, wsock, got):
        client._ping_t = 123.0  # waiting for a PINGRESP
        _read(
            client,
            wsock,
            [publish("t/a", b"1", qos=1, mid=1) + PINGRESP],
            lambda: not client._ping_t,
        )
        assert got == [("t/a", b"1", 1, 1)]
        assert client._ping_t == 0  # paho's own PINGRESP handling ran
        assert client._in_packet["command"] == 0  # and paho's reader state is idle again


def test_qos2_goes_through_paho_and_on_message() -> None:
    with _client(BufferedClient) as (client, wsock, got):
        client.on_socket_register_write = lambda *_: None  # paho queues a PUBREC
        _read(
            client, wsock, [publish("t/q2", b"x", qos=2, mid=9)], lambda: 9 in client._in_messages
        )
        assert got == []  # QoS 2 is delivered by paho on PUBREL, not by the fast path
        assert 9 in client._in_messages


def test_at_most_max_packets_per_call_and_the_rest_stays_buffered() -> None:
    with _client(BufferedClient) as (client, wsock, got):
        wsock.sendall(b"".join(publish("t/a", bytes([i]), qos=1, mid=i + 1) for i in range(10)))
        time.sleep(0.05)
        assert client.loop_read(3) == MQTTErrorCode.MQTT_ERR_SUCCESS
        assert len(got) == 3
        assert client.buffered_packet()
        client.loop_read(1000)
        assert [m[2] for m in got] == list(range(1, 11))
        assert not client.buffered_packet()


def test_a_malformed_packet_closes_the_connection() -> None:
    with _client(BufferedClient) as (client, wsock, got):
        closed: list[Any] = []
        client.on_disconnect = lambda *args: closed.append(args)
        # A PUBLISH whose topic length runs past the end of the packet.
        bad = bytes([0x32, 5]) + (200).to_bytes(2, "big") + b"abc"
        wsock.sendall(publish("t/ok", b"1", qos=1, mid=1) + bad)
        time.sleep(0.05)
        rc = client.loop_read(1000)
        assert rc == MQTTErrorCode.MQTT_ERR_PROTOCOL
        assert got == [("t/ok", b"1", 1, 1)]
        assert client._sock is None
        assert closed


def test_a_closed_socket_is_a_lost_connection() -> None:
    with _client(BufferedClient) as (client, wsock, _):
        wsock.close()
        assert client.loop_read(1000) == MQTTErrorCode.MQTT_ERR_CONN_LOST
        assert client._sock is None


def test_ack_many_writes_the_pubacks_in_order_at_once() -> None:
    with _client(BufferedClient) as (client, wsock, _):
        registered: list[Any] = []
        client.on_socket_register_write = lambda *args: registered.append(args)
        client.ack_many([1, 300, 65535])
        wsock.settimeout(1.0)
        assert wsock.recv(100) == b"\x40\x02\x00\x01" + b"\x40\x02\x01\x2c" + b"\x40\x02\xff\xff"
        assert registered == []  # written at once: no wait for a writable event
        assert not client.want_write()


@pytest.mark.parametrize("qos", [0, 1])
def test_automatic_acks_when_not_manual(qos: int) -> None:
    with _client(BufferedClient) as (client, wsock, got):
        client.manual_ack_set(False)
        client.on_socket_register_write = lambda *_: None
        _read(client, wsock, [publish("t/a", b"1", qos=qos, mid=5)], lambda: bool(got))
        client.loop_write()
        wsock.settimeout(0.2)
        if qos:
            assert wsock.recv(100) == b"\x40\x02\x00\x05"
        else:
            with pytest.raises(TimeoutError):
                wsock.recv(100)
        assert got == [("t/a", b"1", 5 if qos else 0, qos)]


def test_mqtt_5_only() -> None:
    with pytest.raises(ValueError, match="MQTT 5 only"):
        BufferedClient(CallbackAPIVersion.VERSION2, client_id="t", protocol=paho.MQTTv311)


def test_paho_reports_a_failed_read_through_logging(caplog: pytest.LogCaptureFixture) -> None:
    """paho logs nothing unless given a logger; the gateway's log handler renders it."""
    with _client(BufferedClient) as (client, _wsock, _got):
        client._sock.close()  # the read fails with an OSError (a bad file descriptor)
        with caplog.at_level(logging.ERROR, logger="paho.mqtt.client"):
            assert client.loop_read(10) == MQTTErrorCode.MQTT_ERR_CONN_LOST
    assert [(r.name, r.levelno) for r in caplog.records] == [("paho.mqtt.client", logging.ERROR)]
    assert caplog.records[0].getMessage().startswith("failed to receive on socket")
