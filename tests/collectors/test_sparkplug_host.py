"""The Sparkplug host's state machine on synthetic sessions: messages in order, reordered,
duplicated and missing; deaths with the current and a stale bdSeq; a second node with the
same id; rebirth requests held to their cooldown and cap."""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from hypothesis import given, settings
from hypothesis import strategies as st
from tests.sparkplug_payloads import M, encode

from pilotline.collectors.sparkplug.host import Binding, Host, HostSettings, Output
from pilotline.collectors.sparkplug.payload import DataType, Payload, decode
from pilotline.rules.sample import Quality

G, N, D = "Plant1", "edge-1", "press-7"
T0 = 1_795_737_600_000
BINDINGS = [
    Binding("laser-01", G, N, None, {"state": "Status/State", "power_w": "Power"}),
    Binding("press-07", G, N, D, {"state": "State", "count": "Count"}),
]
PRIMARY = HostSettings(primary=True)

Message = tuple[str, Payload]


def nbirth(bdseq: int = 0, seq: int = 0) -> Message:
    payload = encode(
        [
            M("bdSeq", bdseq, DataType.INT64),
            M("Node Control/Rebirth", False, DataType.BOOLEAN),
            M("Status/State", "Idle", DataType.STRING, alias=1),
            M("Power", 0.0, DataType.DOUBLE, alias=2),
        ],
        seq=seq,
        timestamp=T0,
    )
    return f"spBv1.0/{G}/NBIRTH/{N}", decode(payload)


def dbirth(seq: int = 1) -> Message:
    payload = encode(
        [M("State", "Idle", DataType.STRING, alias=3), M("Count", 0, DataType.INT32, alias=4)],
        seq=seq,
        timestamp=T0,
    )
    return f"spBv1.0/{G}/DBIRTH/{N}/{D}", decode(payload)


def ndata(seq: int, power: float) -> Message:
    payload = encode([M(None, power, DataType.DOUBLE, alias=2)], seq=seq, timestamp=T0 + seq)
    return f"spBv1.0/{G}/NDATA/{N}", decode(payload)


def ddata(seq: int, count: int) -> Message:
    payload = encode([M(None, count, DataType.INT32, alias=4)], seq=seq, timestamp=T0 + seq)
    return f"spBv1.0/{G}/DDATA/{N}/{D}", decode(payload)


def ndeath(bdseq: int) -> Message:
    return f"spBv1.0/{G}/NDEATH/{N}", decode(encode([M("bdSeq", bdseq, DataType.INT64)]))


def session(n: int) -> list[Message]:
    """NBIRTH, DBIRTH, then ``n`` data messages alternating node and device, seq 2.."""
    msgs = [nbirth(), dbirth()]
    for i in range(n):
        seq = (2 + i) % 256
        msgs.append(ndata(seq, float(i)) if i % 2 == 0 else ddata(seq, -i))
    return msgs


def data_values(out: Output) -> list[tuple[str, float | str]]:
    """(machine, value) of power_w/count in the order the host emitted them."""
    return [
        (s.machine, v)
        for s in out.samples
        for k, v in s.values.items()
        if k in ("power_w", "count")
    ]


def run(host: Host, msgs: Sequence[Message], now: int = T0) -> Output:
    out = Output()
    for topic, payload in msgs:
        out.extend(host.receive(topic, payload, now))
    return out


def expected(n: int) -> list[tuple[str, float | str]]:
    return data_values(run(Host(BINDINGS), session(n)))


def test_a_session_in_order() -> None:
    host = Host(BINDINGS, PRIMARY)
    out = run(host, session(4))
    assert [(s.machine, dict(s.values)) for s in out.samples] == [
        ("laser-01", {"state": "Idle", "power_w": 0.0}),
        ("press-07", {"state": "Idle", "count": 0.0}),
        ("laser-01", {"power_w": 0.0}),
        ("press-07", {"count": -1.0}),
        ("laser-01", {"power_w": 2.0}),
        ("press-07", {"count": -3.0}),
    ]
    assert out.samples[3].ts_ms == T0 + 3  # the metric's (payload's) time
    assert out.rebirths == []
    assert out.reports == []
    assert out.offline == []
    assert host.node_state(G, N) == (True, 0, 6)


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 40), data=st.data())
def test_reordered_within_the_timer_is_applied_in_seq_order(n: int, data: st.DataObject) -> None:
    msgs = session(n)
    shuffled = msgs[:1] + data.draw(st.permutations(msgs[1:]))
    host = Host(BINDINGS, PRIMARY)
    out = run(host, shuffled)
    out.extend(host.tick(T0 + PRIMARY.reorder_ms - 1))
    assert data_values(out) == expected(n)
    assert out.rebirths == []
    assert not [r for r in out.reports if r.kind in ("seq_gap", "seq_backwards")]


@settings(max_examples=60, deadline=None)
@given(n=st.integers(1, 40), data=st.data())
def test_duplicates_are_dropped(n: int, data: st.DataObject) -> None:
    msgs = session(n)
    with_dups = list(msgs)
    for i in data.draw(st.lists(st.integers(1, len(msgs) - 1), max_size=10)):
        # QoS 1 redelivers a message soon after: within a few positions
        at = min(len(with_dups), i + 1 + data.draw(st.integers(0, 4)))
        with_dups.insert(at, msgs[i])
    host = Host(BINDINGS, PRIMARY)
    out = run(host, with_dups)
    assert data_values(out) == expected(n)
    assert out.rebirths == []
    assert {r.kind for r in out.reports} <= {"duplicate"}


@settings(max_examples=60, deadline=None)
@given(n=st.integers(2, 40), data=st.data())
def test_a_missing_message_is_a_gap_then_one_rebirth(n: int, data: st.DataObject) -> None:
    msgs = session(n)
    lost = data.draw(st.integers(2, len(msgs) - 2))  # one data message, not the last
    host = Host(BINDINGS, PRIMARY)
    out = run(host, msgs[:lost] + msgs[lost + 1 :])
    assert out.rebirths == []  # the reorder timer first
    deadline = host.next_deadline()
    assert deadline is not None
    assert deadline <= T0 + PRIMARY.reorder_ms
    out.extend(host.tick(T0 + PRIMARY.reorder_ms))
    assert [r.cause for r in out.rebirths] == ["seq_gap"]
    assert [r.kind for r in out.reports] == ["seq_gap"]
    full = expected(n)  # two birth values, then one per data message
    assert data_values(out) == full[:lost] + full[lost + 1 :]
    # the stream goes on after the gap
    seq = (2 + n) % 256
    later = host.receive(*ndata(seq, 99.0), T0 + 5_000)
    assert data_values(later) == [("laser-01", 99.0)]


@settings(max_examples=40, deadline=None)
@given(bdseq=st.integers(0, 255), stale=st.integers(0, 255))
def test_death_with_the_current_bdseq_and_a_stale_one(bdseq: int, stale: int) -> None:
    host = Host(BINDINGS, PRIMARY)
    run(host, [nbirth(bdseq), dbirth()])
    now = T0 + 7_000
    if stale != bdseq:
        out = host.receive(*ndeath(stale), now)
        assert out.offline == []
        assert [r.kind for r in out.reports] == ["stale_death"]
        assert host.node_state(G, N)[0]
    out = host.receive(*ndeath(bdseq), now)
    assert sorted((o.machine, o.at_ms, o.cause) for o in out.offline) == [
        ("laser-01", now, "ndeath"),
        ("press-07", now, "ndeath"),
    ]
    assert not host.node_state(G, N)[0]


def test_a_device_death_marks_only_its_machines() -> None:
    host = Host(BINDINGS, PRIMARY)
    run(host, session(2))
    out = host.receive(f"spBv1.0/{G}/DDEATH/{N}/{D}", decode(encode([], seq=4)), T0 + 50)
    assert [(o.machine, o.at_ms, o.cause) for o in out.offline] == [("press-07", T0 + 50, "ddeath")]


def test_the_broker_lost_marks_every_machine_offline_and_needs_births() -> None:
    host = Host(BINDINGS, PRIMARY)
    run(host, session(2))
    out = host.broker_lost(T0 + 100)
    assert sorted(o.machine for o in out.offline) == ["laser-01", "press-07"]
    out = host.receive(*ndata(4, 1.0), T0 + 200)
    assert data_values(out) == []
    assert [r.cause for r in out.rebirths] == ["not_born"]


@settings(max_examples=40, deadline=None)
@given(n=st.integers(3, 30), other=st.lists(st.integers(0, 255), min_size=1, max_size=30))
def test_a_second_node_with_the_same_id_is_reported_not_answered(n: int, other: list[int]) -> None:
    host = Host(BINDINGS, PRIMARY)
    out = run(host, session(n))
    nxt = host.node_state(G, N)[2]
    behind = [s for s in other if 0 < (nxt - s) % 256 < 128]
    out = run(host, [ndata(s, -1.0) for s in behind], T0 + 10)
    assert out.rebirths == []
    assert all(r.kind in ("seq_backwards", "duplicate") for r in out.reports)
    assert data_values(out) == []


@settings(max_examples=60, deadline=None)
@given(
    events=st.lists(
        st.tuples(st.integers(0, 5), st.integers(0, 20_000)), min_size=1, max_size=200
    )
)
def test_rebirth_requests_keep_cooldown_backoff_and_cap(events: list[tuple[int, int]]) -> None:
    cap = HostSettings(primary=True, rebirth_cap=3)
    host = Host([], cap)
    now = T0
    sent: list[tuple[str, int]] = []
    for node, step in events:
        now += step
        out = host.receive(f"spBv1.0/{G}/NDATA/n{node}", decode(encode([], seq=5)), now)
        sent += [(r.node, now) for r in out.rebirths]
    by_node: dict[str, list[int]] = {}
    for node_id, at in sent:
        by_node.setdefault(node_id, []).append(at)
    for times in by_node.values():
        gaps = [b - a for a, b in itertools.pairwise(times)]
        # each wait at least the cooldown, and doubling while no birth answers
        waits = [min(cap.rebirth_cooldown_ms * 2**i, cap.rebirth_max_ms) for i in range(len(gaps))]
        assert all(g >= w for g, w in zip(gaps, waits, strict=True))
    times = sorted(at for _, at in sent)
    assert all(
        sum(1 for t in times if at - 60_000 < t <= at) <= cap.rebirth_cap for at in times
    )
    assert sum(host.rebirths.values()) == len(sent)
    assert sum(host.rebirths_held.values()) == len(events) - len(sent)


def test_a_passive_host_never_asks_but_counts() -> None:
    host = Host(BINDINGS)
    out = host.receive(*ndata(4, 1.0), T0)
    assert out.rebirths == []
    assert host.rebirths_held == {"not_born": 1}


def test_historical_null_and_quality() -> None:
    host = Host(BINDINGS, PRIMARY)
    run(host, [nbirth(), dbirth()])
    payload = encode(
        [
            M(None, 5.0, DataType.DOUBLE, alias=2, timestamp=T0 - 60_000, is_historical=True),
            M(None, None, DataType.STRING, alias=1, is_null=True),
        ],
        seq=2,
    )
    out = host.receive(f"spBv1.0/{G}/NDATA/{N}", decode(payload), T0 + 1)
    assert out.samples == []
    assert [(s.machine, s.ts_ms, dict(s.values)) for s in out.history] == [
        ("laser-01", T0 - 60_000, {"power_w": 5.0})
    ]
    assert [r.kind for r in out.reports] == ["null_value"]
    bad = encode([M(None, "Executing", DataType.STRING, alias=1, quality=0)], seq=3)
    (sample,) = host.receive(f"spBv1.0/{G}/NDATA/{N}", decode(bad), T0 + 2).samples
    assert sample.quality is Quality.BAD


def test_heartbeats_keep_born_machines_alive_until_death() -> None:
    host = Host(BINDINGS, PRIMARY)
    run(host, [nbirth(), dbirth()])
    assert host.next_deadline() == T0 + PRIMARY.heartbeat_ms
    out = host.tick(T0 + PRIMARY.heartbeat_ms)
    assert sorted((s.machine, s.ts_ms, dict(s.values)) for s in out.samples) == [
        ("laser-01", T0 + PRIMARY.heartbeat_ms, {}),
        ("press-07", T0 + PRIMARY.heartbeat_ms, {}),
    ]
    host.receive(*ndeath(0), T0 + 11_000)
    assert host.next_deadline() is None
    assert host.tick(T0 + 60_000).samples == []


def test_stamps_stay_monotonic_per_machine() -> None:
    host = Host(BINDINGS, PRIMARY)
    run(host, [nbirth(), dbirth()])
    host.tick(T0 + PRIMARY.heartbeat_ms)
    # the node's clock runs behind the host's: its next value is not stamped before
    out = host.receive(*ndata(2, 3.0), T0 + PRIMARY.heartbeat_ms + 1)
    assert out.samples[0].ts_ms == T0 + PRIMARY.heartbeat_ms
