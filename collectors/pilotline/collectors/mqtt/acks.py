"""Manual acknowledgement: a PUBACK goes out only once the gateway says a message is durable.

Each received message gets an ``AckToken``; the gateway hands tokens back through
``MqttCollector.ack`` after the sample (or its quarantine record) is committed. Packet ids
restart per connection and are reused as soon as a message is acknowledged, so a token also
carries a delivery number, unique for the collector's lifetime, and the connection keeps
``outstanding`` (packet id -> delivery number) for its unacknowledged QoS 1/2 messages (the
collector's per-message path writes it). A PUBACK goes out only for a delivery still
outstanding on the current connection: a token of an earlier connection, or one acked twice,
is dropped and can never acknowledge another message. The broker redelivers the messages of
a lost connection on the next one anyway.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import NamedTuple

from pilotline.collectors.mqtt.connection import Connection

__all__ = ["AckToken", "acknowledge"]


class AckToken(NamedTuple):
    """Identifies a received message for ``MqttCollector.ack``; opaque to the gateway.

    A NamedTuple, not a frozen dataclass: one is made per message, and it costs a third."""

    mid: int
    qos: int
    delivery: int = 0  # unique per received message; guards against reused packet ids


def acknowledge(conn: Connection, tokens: Iterable[AckToken]) -> int:
    """Acknowledge ``tokens`` that are still outstanding on ``conn``; how many were dropped.

    QoS 0 tokens need nothing. The PUBACKs of one call leave as one write."""
    outstanding = conn.outstanding
    pubacks: list[int] = []
    dropped = 0
    for token in tokens:
        if token.qos == 0:
            continue
        if outstanding.get(token.mid) != token.delivery or conn.sock is None:
            dropped += 1
            continue
        del outstanding[token.mid]
        if token.qos == 1:
            pubacks.append(token.mid)
        else:
            conn.client.ack(token.mid, token.qos)
    if pubacks:
        conn.client.ack_many(pubacks)  # one write for the whole commit
    return dropped
