"""A session contested by another client with our client id: recognise it, slow down, say so.

A broker allows one connection per client id. When a second client connects with ours (a
second gateway on another host, a copy of the configuration), the broker closes our
connection: a *session takeover*. Two gateways then take the session from each other as
fast as they reconnect, every second, and split the messages between their stores.

How a takeover shows:

- MQTT 5 brokers send DISCONNECT with reason code 0x8E "Session taken over" first
  (Mosquitto since 2.0.15, EMQX, HiveMQ): certain, at the first one.
- Older brokers (Mosquitto before 2.0.15, as in Ubuntu 22.04) only close the socket, which
  looks like any lost connection. ``FLAP_CONNECTIONS`` connections in a row that the broker
  closed within ``FLAP_S`` of accepting them are reported as a likely takeover: a network
  fault rarely lets a connection be accepted at once and lost at once, again and again.

Either way the connection is *contested*: the collector logs an error, counts as down for
the alert rules and ``/health`` until a connection holds ``QUIET_S``, and waits a long
backoff (``FIRST_S`` doubling up to ``MAX_S``, jittered) before it reconnects, so that the
other client keeps the session meanwhile and the two do not flap every second. It does go
on reconnecting: the other client may be gone for good (stopped by an operator, a test
client), and a gateway that gave up would stay deaf until someone restarts it.

Pure: times come in as arguments; ``collector.py`` feeds it and logs what it says.
"""

from __future__ import annotations

import enum
import random
from dataclasses import dataclass

from pilotline.collectors.backoff import equal_jitter

__all__ = [
    "FIRST_S",
    "FLAP_CONNECTIONS",
    "FLAP_S",
    "MAX_S",
    "QUIET_S",
    "SESSION_TAKEN_OVER",
    "Contest",
    "End",
    "how_it_ended",
]

SESSION_TAKEN_OVER = 0x8E
"""MQTT 5 DISCONNECT reason code: another connection with the same client id took over."""
_UNSPECIFIED = 0x80  # what paho reports for a socket the peer closed (no DISCONNECT packet)

FLAP_S = 10.0
"""A connection the broker closes within this long of accepting it is a short one."""
FLAP_CONNECTIONS = 3
"""Short connections in a row that make a likely takeover (brokers that do not say 0x8E)."""
FIRST_S = 30.0
"""Backoff after the first contested connection (jittered to between half and all of it)."""
MAX_S = 300.0
"""The backoff's cap, after repeated contested connections."""
QUIET_S = 300.0
"""A connection that holds this long ends the contest (as long as the longest backoff, so
that another gateway waiting out its own backoff has had its turn to come back)."""


class End(enum.Enum):
    """How a connection the broker had accepted ended."""

    TAKEN_OVER = "taken_over"  # DISCONNECT 0x8E from the broker
    CLOSED = "closed"  # lost without a DISCONNECT packet: the broker or the network closed it
    OTHER = "other"  # any other DISCONNECT, a keep-alive timeout, our own disconnect


def how_it_ended(*, from_broker: bool, reason: int) -> End:
    """``End`` from paho's ``on_disconnect``: whether a DISCONNECT packet came from the
    broker, and the (MQTT 5) reason code paho gives."""
    if from_broker:
        return End.TAKEN_OVER if reason == SESSION_TAKEN_OVER else End.OTHER
    return End.CLOSED if reason == _UNSPECIFIED else End.OTHER


@dataclass(slots=True)
class Contest:
    """Whether our session is contested, since when and why, and how long to back off."""

    client_id: str
    since_ms: int | None = None  # contested since (None: not contested)
    why: str | None = None
    rounds: int = 0  # contested connections since the contest began
    short: int = 0  # short connections closed in a row

    @property
    def active(self) -> bool:
        return self.since_ms is not None

    def ended(self, how: End, *, lasted_ms: int, at_ms: int) -> str | None:
        """A connection the broker had accepted ended at ``at_ms`` after ``lasted_ms``.
        Returns why this was a contested connection (one more round), or None."""
        if how is End.TAKEN_OVER:
            self.short = 0
            return self._round(
                at_ms,
                f"the broker says another client connected with client id {self.client_id!r} "
                "and took the session over (DISCONNECT reason 0x8E)",
            )
        if how is End.CLOSED and lasted_ms < FLAP_S * 1000:
            self.short += 1
            if self.short >= FLAP_CONNECTIONS:
                return self._round(
                    at_ms,
                    f"the broker closed {self.short} connections in a row within {FLAP_S:g} s "
                    "of accepting them; likely another client with client id "
                    f"{self.client_id!r} takes the session over (a broker that does not send "
                    "MQTT 5's reason 0x8E, such as Mosquitto before 2.0.15, cannot say so)",
                )
            return None
        self.short = 0
        return None

    def _round(self, at_ms: int, why: str) -> str:
        if self.since_ms is None:
            self.since_ms = at_ms
        self.rounds += 1
        self.why = why
        return why

    def held(self) -> None:
        """A connection held ``QUIET_S``: the other client is gone, the contest is over."""
        self.since_ms = None
        self.why = None
        self.rounds = 0
        self.short = 0

    def backoff_s(self, rng: random.Random | None = None) -> float:
        """How long to wait before reconnecting after the latest contested connection."""
        return equal_jitter(max(0, self.rounds - 1), FIRST_S, MAX_S, rng)
