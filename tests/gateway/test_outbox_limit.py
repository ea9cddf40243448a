"""The outbox's size limit and its policy: raw telemetry goes first, oldest first; events
(states, windows, capacity, alerts) only when they alone exceed the limit. Every drop is
counted by priority, logged once per burst and turns /health's influx part unhealthy."""

from __future__ import annotations

from pathlib import Path

import pytest
from prometheus_client import generate_latest
from structlog.testing import capture_logs
from tests.fakes import T0, Clock
from tests.sites import UNIT_INFLUX, machine_config, site_yaml

from pilotline.collectors.mqtt.collector import AckToken
from pilotline.gateway.api.metrics import registry
from pilotline.gateway.config import load_config
from pilotline.gateway.service import DROPPING_UNHEALTHY_MS, Gateway
from pilotline.gateway.sinks.influx.points import PRIORITY_EVENT as EV
from pilotline.gateway.sinks.influx.points import PRIORITY_TELEMETRY as TM
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.gateway.store import Store
from pilotline.rules import Sample


def rows(store: Store) -> list[tuple[int, str]]:
    """(priority, line) of every row, oldest first."""
    return [
        (int(r[0]), str(r[1]))
        for r in store._db.execute("SELECT priority, line FROM outbox ORDER BY id")
    ]


def counted(store: Store) -> dict[int, int]:
    return {
        int(p): int(n)
        for p, n in store._db.execute("SELECT priority, COUNT(*) FROM outbox GROUP BY priority")
    }


@pytest.fixture
def store(tmp_path: Path) -> Store:
    return Store(tmp_path / "o.db", outbox_max_points=10)


def test_under_the_limit_nothing_is_dropped(store: Store) -> None:
    store.commit(now_ms=1, lines=[(TM, f"t{i}") for i in range(6)] + [(EV, "e0"), (EV, "e1")])
    store.commit(now_ms=2, lines=[(TM, "t6"), (EV, "e2")])
    assert store.outbox_depth() == 10
    assert store.outbox_dropped == {}
    assert store.last_drop is None


def test_telemetry_is_dropped_oldest_first_before_any_event(store: Store) -> None:
    store.commit(now_ms=1, lines=[(EV, "e0"), *[(TM, f"t{i}") for i in range(8)], (EV, "e1")])
    store.commit(now_ms=2, lines=[(TM, "t8"), (EV, "e2"), (TM, "t9")])  # 3 too many
    assert rows(store) == [
        (EV, "e0"),
        *[(TM, f"t{i}") for i in range(3, 8)],
        (EV, "e1"),
        (TM, "t8"),
        (EV, "e2"),
        (TM, "t9"),
    ]
    assert store.outbox_depth() == 10
    assert store.outbox_dropped == {TM: 3}
    assert store.last_drop is not None
    assert store.last_drop.dropped == {TM: 3}
    assert store.last_drop.at_ms == 2
    assert store.last_drop.depth == 10


def test_events_go_only_when_they_alone_exceed_the_limit(store: Store) -> None:
    store.commit(now_ms=1, lines=[(TM, "t0"), *[(EV, f"e{i}") for i in range(8)], (TM, "t1")])
    store.commit(now_ms=2, lines=[(EV, f"e{i}") for i in range(8, 12)])  # 14 rows, 12 events
    assert rows(store) == [(EV, f"e{i}") for i in range(2, 12)]
    assert store.outbox_dropped == {TM: 2, EV: 2}
    assert store.outbox_depth_by_priority() == {EV: 10}


def test_one_batch_larger_than_the_limit_keeps_its_newest_events(tmp_path: Path) -> None:
    store = Store(tmp_path / "o.db", outbox_max_points=3)
    store.commit(now_ms=1, lines=[(EV, "e0"), (TM, "t0"), (EV, "e1"), (EV, "e2"), (EV, "e3")])
    assert rows(store) == [(EV, "e1"), (EV, "e2"), (EV, "e3")]
    assert store.outbox_dropped == {TM: 1, EV: 1}


def test_reports_obey_the_limit_too(store: Store) -> None:
    store.commit(now_ms=1, lines=[(TM, f"t{i}") for i in range(10)])
    store.commit_report("utilization", 0, lines=[(EV, "u0"), (EV, "u1")], now_ms=2)
    assert store.outbox_depth() == 10
    assert store.outbox_dropped == {TM: 2}
    assert rows(store)[-2:] == [(EV, "u0"), (EV, "u1")]


def test_without_a_limit_the_outbox_grows(tmp_path: Path) -> None:
    store = Store(tmp_path / "o.db")
    store.commit(now_ms=1, lines=[(TM, f"t{i}") for i in range(1000)])
    assert store.outbox_depth() == 1000
    assert store.outbox_dropped == {}


def test_a_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outbox_max_points"):
        Store(tmp_path / "o.db", outbox_max_points=0)


def test_per_priority_depths_follow_drains_dead_letters_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    store = Store(path, outbox_max_points=50)
    for k in range(20):  # mixed, over the limit several times
        store.commit(now_ms=k, lines=[(TM, f"t{k}.{i}") for i in range(3)] + [(EV, f"e{k}")])
        assert store.outbox_depth_by_priority() == counted(store)
        assert store.outbox_depth() == sum(counted(store).values())
    peeked = store.outbox_peek(7)
    store.outbox_delete(peeked[-1][0])
    assert store.outbox_depth_by_priority() == counted(store)
    peeked = store.outbox_peek(5)
    store.outbox_dead_letter(peeked[-1][0], now_ms=99, status=400, error="refused")
    assert store.outbox_depth_by_priority() == counted(store)
    expected = counted(store)
    store.close()
    reopened = Store(path, outbox_max_points=50)
    assert reopened.outbox_depth_by_priority() == expected
    assert reopened.outbox_depth() == sum(expected.values())


def test_dropping_from_a_large_outbox_stays_cheap(tmp_path: Path) -> None:
    """Dropping is index work only: no COUNT, and no statement that scans a table. (How long
    it takes is a benchmark's business: benchmarks/README.md.)"""
    store = Store(tmp_path / "o.db", outbox_max_points=200_000)
    batch = [(EV, "e")] + [(TM, "telemetry,machine=m power_w=1 1")] * 9_999
    for k in range(20):
        store.commit(now_ms=k, lines=batch)
    assert store.outbox_depth() == 200_000
    statements: list[str] = []
    store._db.set_trace_callback(statements.append)
    store.commit(now_ms=99, lines=batch)
    store._db.set_trace_callback(None)
    assert store.outbox_dropped[TM] == 10_000
    assert store.outbox_depth_by_priority()[EV] == 21
    reads = [s for s in statements if s.split()[0].upper() in {"SELECT", "UPDATE", "DELETE"}]
    assert any(s.upper().startswith("DELETE") for s in reads)  # the drop did happen here
    for statement in reads:
        assert "COUNT(" not in statement.upper(), statement
        plan = [row[3] for row in store._db.execute("EXPLAIN QUERY PLAN " + statement)]
        assert plan, statement
        assert all(step.startswith("SEARCH") for step in plan), (statement, plan)


# -- the limit in bytes ---------------------------------------------------------------------------


def stored_bytes(store: Store) -> int:
    """What the outbox's byte depth must be: each batch's stored JSON, pro rata of its lines
    left (the module doc of store/outbox.py)."""
    total = 0
    for data, count, skip in store._db.execute("SELECT lines, count, skip FROM outbox_batch"):
        total += len(data.encode()) * (count - skip) // count
    return total


def telemetry(i: int, fields: int) -> str:
    body = ",".join(f"k{j}={i}.5" for j in range(fields))
    return f"telemetry,machine=m,site=s,zone=z {body} {i}000000"


def test_wide_lines_are_bounded_in_bytes_before_the_line_limit(tmp_path: Path) -> None:
    """64-field lines (~700 bytes each): 1,000 of them exceed 256 KiB long before the line
    limit; telemetry goes oldest first and the events all stay."""
    limit = 256 * 1024
    store = Store(tmp_path / "o.db", outbox_max_points=1_000_000, outbox_max_bytes=limit)
    for k in range(100):
        lines = [(EV, f"machine_state,machine=m state_code=1i {k}")]
        lines += [(TM, telemetry(k * 10 + i, 64)) for i in range(10)]
        store.commit(now_ms=k, lines=lines)
        assert store.outbox_bytes() == stored_bytes(store) <= limit
    kept = rows(store)
    assert len(kept) < 600  # 100 events and under 500 of the 1,000 telemetry lines
    assert [line for p, line in kept if p == EV] == [
        f"machine_state,machine=m state_code=1i {k}" for k in range(100)
    ]
    telemetry_kept = [line for p, line in kept if p == TM]
    assert telemetry_kept == [telemetry(i, 64) for i in range(1000 - len(telemetry_kept), 1000)]
    assert store.outbox_dropped == {TM: 1000 - len(telemetry_kept)}
    assert store.last_drop is not None
    assert store.last_drop.bytes == store.outbox_bytes()
    # Within a few lines of the limit: a drop takes what is needed, not whole batches.
    assert store.outbox_bytes() > limit - 2 * len(telemetry(0, 64))


def test_events_go_by_bytes_only_when_they_alone_exceed_it(tmp_path: Path) -> None:
    store = Store(tmp_path / "o.db", outbox_max_bytes=10_000)
    store.commit(now_ms=1, lines=[(TM, "t" * 3000), (EV, "e" * 3000)])
    store.commit(now_ms=2, lines=[(EV, "f" * 3000), (EV, "g" * 3000)])  # 12,000 bytes and more
    assert [line[0] for _, line in rows(store)] == ["e", "f", "g"]
    assert store.outbox_dropped == {TM: 1}
    store.commit(now_ms=3, lines=[(EV, "h" * 3000)])
    assert [line[0] for _, line in rows(store)] == ["f", "g", "h"]
    assert store.outbox_dropped == {TM: 1, EV: 1}
    assert store.outbox_bytes() == stored_bytes(store) <= 10_000


def test_byte_depths_follow_drains_dead_letters_and_reopening(tmp_path: Path) -> None:
    path = tmp_path / "o.db"
    store = Store(path, outbox_max_bytes=20_000)
    for k in range(40):  # over the limit many times, in whole batches and in parts
        store.commit(now_ms=k, lines=[(TM, telemetry(k * 3 + i, k % 7 + 1)) for i in range(3)])
        store.commit(now_ms=k, lines=[(EV, f"e{k} ünïcødé")])
        assert store.outbox_bytes() == stored_bytes(store) <= 20_000
    peeked = store.outbox_peek(7)
    store.outbox_delete(peeked[-1][0])  # ends inside a batch
    assert store.outbox_bytes() == stored_bytes(store)
    peeked = store.outbox_peek(5)
    store.outbox_dead_letter(peeked[-1][0], now_ms=99, status=400, error="refused")
    assert store.outbox_bytes() == stored_bytes(store)
    expected = store.outbox_bytes()
    store.close()
    reopened = Store(path, outbox_max_bytes=20_000)
    assert reopened.outbox_bytes() == expected


def test_a_byte_limit_must_be_positive(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="outbox_max_bytes"):
        Store(tmp_path / "o.db", outbox_max_bytes=0)


# -- the gateway: metrics, log, health ---------------------------------------------------------

def test_the_gateway_counts_logs_and_reports_drops(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            {"photonics": [machine_config("laser-01")]},
            influx={**UNIT_INFLUX, "outbox_max_points": 1000},
            store=tmp_path / "gw.db",
        )
    )
    clock = Clock()
    gateway = Gateway(load_config(path), writer=MemoryWriter(), clock_ms=clock)
    assert gateway.store.outbox_max_points == 1000
    assert gateway.store.outbox_max_bytes == 1024**3  # the default
    assert gateway.health()["influx"]["healthy"]
    with capture_logs() as logs:
        for i in range(1500):  # InfluxDB away: nothing drains
            clock.ms = T0 + i * 100
            values = {"state": "Executing", "power_w": 1.0 * i}
            gateway.ingest.sample(Sample("laser-01", clock.ms, values), AckToken(i, 1, i))
            gateway.commit()
    store = gateway.store
    assert store.outbox_depth() == 1000
    assert store.outbox_dropped.get(EV, 0) == 0  # events all kept
    telemetry_dropped = store.outbox_dropped[TM]
    assert telemetry_dropped > 0
    assert store.outbox_depth_by_priority() == counted(store)

    dropped_lines = [e for e in logs if e["event"] == "outbox.dropped"]
    # 150 s of continuous dropping: the start and one line per 10 s, not one per commit.
    assert 2 <= len(dropped_lines) <= 20
    assert dropped_lines[0]["burst"] == "started"
    assert sum(e["telemetry"] for e in dropped_lines) <= telemetry_dropped
    assert dropped_lines[0]["limit"] == 1000

    health = gateway.health()
    assert not health["healthy"]
    assert not health["influx"]["healthy"]
    assert "outbox full" in health["influx"]["why"]
    assert health["influx"]["outbox_dropped"] == {"1": telemetry_dropped}

    scrape = generate_latest(registry(gateway.metrics, gateway.gauges())).decode()
    assert f'pilotline_outbox_dropped_total{{priority="1"}} {float(telemetry_dropped)}' in scrape
    assert 'pilotline_outbox_dropped_total{priority="0"} 0.0' in scrape

    # The burst ends: the counts not yet logged are logged once, and health recovers.
    store.outbox_delete(store.outbox_peek(900)[-1][0])  # InfluxDB back, drained
    clock.ms += DROPPING_UNHEALTHY_MS + 1
    with capture_logs() as later:
        gateway.ingest.sample(
            Sample("laser-01", clock.ms, {"state": "Executing"}), AckToken(1, 1, 1)
        )
        gateway.commit()
    ended = [e for e in later if e["event"] == "outbox.dropped"]
    assert [e["burst"] for e in ended] == ["ended"]
    total_logged = sum(e["telemetry"] for e in dropped_lines + ended)
    assert total_logged == telemetry_dropped
    assert gateway.health()["influx"]["healthy"]
