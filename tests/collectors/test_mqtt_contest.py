"""When another client takes our MQTT session over (contest.py), with no broker.

Against a real Mosquitto: tests/integration/test_alert_collector.py (a second client with
the gateway's client id turns /health unhealthy and raises the collector alert).
"""

from __future__ import annotations

import random

import pytest

from pilotline.collectors.mqtt.contest import (
    FIRST_S,
    FLAP_CONNECTIONS,
    FLAP_S,
    MAX_S,
    SESSION_TAKEN_OVER,
    Contest,
    End,
    how_it_ended,
)

T = 1_795_737_600_000
SHORT = int(FLAP_S * 1000) - 1
LONG = int(FLAP_S * 1000)


@pytest.mark.parametrize(
    ("from_broker", "reason", "end"),
    [
        (True, SESSION_TAKEN_OVER, End.TAKEN_OVER),
        (True, 0x8B, End.OTHER),  # server shutting down
        (True, 0x00, End.OTHER),
        (False, 0x80, End.CLOSED),  # paho's "Unspecified error": the socket was closed
        (False, 0x8D, End.OTHER),  # paho's keep-alive timeout
        (False, 0x00, End.OTHER),  # our own DISCONNECT
        (False, SESSION_TAKEN_OVER, End.OTHER),  # only the broker can say it
    ],
)
def test_how_a_connection_ended(from_broker: bool, reason: int, end: End) -> None:
    assert how_it_ended(from_broker=from_broker, reason=reason) is end


def test_reason_0x8e_is_a_takeover_at_once() -> None:
    contest = Contest("gw-a")
    why = contest.ended(End.TAKEN_OVER, lasted_ms=3_600_000, at_ms=T)
    assert why is not None
    assert "'gw-a'" in why
    assert "0x8E" in why
    assert contest.active
    assert contest.since_ms == T
    assert contest.why == why


def test_connections_the_broker_closes_at_once_again_and_again_are_a_likely_takeover() -> None:
    contest = Contest("gw-a")
    for i in range(FLAP_CONNECTIONS - 1):
        assert contest.ended(End.CLOSED, lasted_ms=SHORT, at_ms=T + i) is None
    assert not contest.active
    why = contest.ended(End.CLOSED, lasted_ms=SHORT, at_ms=T + 9)
    assert why is not None
    assert "likely" in why
    assert "'gw-a'" in why
    assert contest.since_ms == T + 9
    # every further short one is one more round, from the same start
    assert contest.ended(End.CLOSED, lasted_ms=SHORT, at_ms=T + 50) is not None
    assert (contest.rounds, contest.since_ms) == (2, T + 9)


@pytest.mark.parametrize(
    ("end", "lasted_ms"), [(End.CLOSED, LONG), (End.OTHER, SHORT)]
)
def test_a_long_connection_or_another_end_breaks_the_run(end: End, lasted_ms: int) -> None:
    contest = Contest("gw-a")
    for _ in range(FLAP_CONNECTIONS - 1):
        contest.ended(End.CLOSED, lasted_ms=SHORT, at_ms=T)
    assert contest.ended(end, lasted_ms=lasted_ms, at_ms=T) is None
    for _ in range(FLAP_CONNECTIONS - 1):
        assert contest.ended(End.CLOSED, lasted_ms=SHORT, at_ms=T) is None
    assert not contest.active


def test_the_backoff_is_long_grows_and_is_capped() -> None:
    rng = random.Random(7)
    contest = Contest("gw-a")
    delays = []
    for i in range(8):
        contest.ended(End.TAKEN_OVER, lasted_ms=SHORT, at_ms=T + i)
        delays.append(contest.backoff_s(rng))
    assert FIRST_S / 2 <= delays[0] <= FIRST_S  # not the second of a plain reconnect
    assert all(MAX_S / 2 <= d <= MAX_S for d in delays[-3:])
    assert delays[3] > delays[0]


def test_a_connection_that_holds_ends_the_contest() -> None:
    contest = Contest("gw-a")
    contest.ended(End.TAKEN_OVER, lasted_ms=SHORT, at_ms=T)
    contest.ended(End.TAKEN_OVER, lasted_ms=SHORT, at_ms=T + 1)
    contest.held()
    assert not contest.active
    assert (contest.since_ms, contest.why, contest.rounds) == (None, None, 0)
    contest.ended(End.TAKEN_OVER, lasted_ms=SHORT, at_ms=T + 2)
    assert contest.rounds == 1  # a new contest starts at the first step again
