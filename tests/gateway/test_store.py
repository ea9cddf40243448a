"""The SQLite store: one transaction per commit, durable outbox, embedded tables."""

from __future__ import annotations

import os
import sqlite3
import stat
from collections.abc import Iterator
from pathlib import Path

import pytest
from structlog.testing import capture_logs
from tests.fakes import T0

from pilotline.gateway.sinks.influx.points import PRIORITY_EVENT, PRIORITY_TELEMETRY
from pilotline.gateway.store import SCHEMA_VERSION, QuarantineRow, Store, StoreError, Transaction
from pilotline.gateway.store.tokens import Role
from pilotline.rules.events import (
    Capacity,
    IdleWindowClosed,
    IdleWindowOpened,
    SampleRejected,
    StateChanged,
    ZoneCapacity,
)
from pilotline.rules.states import State

NOW = 1_795_740_000_000


def _q(i: int, reason: str = "malformed") -> QuarantineRow:
    return QuarantineRow(T0 + i, "mqtt", f"pilot/t/{i}", "m1", reason, b"{bad")


def test_creates_directories_wal_and_schema_version(tmp_path: Path) -> None:
    path = tmp_path / "a" / "b" / "store.db"
    Store(path).close()
    db = sqlite3.connect(path)
    assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    assert db.execute("SELECT version FROM schema_version").fetchall() == [(SCHEMA_VERSION,)]
    db.close()


@pytest.fixture
def shell_umask() -> Iterator[None]:
    """The umask of a login shell (022): new files are world-readable unless made otherwise."""
    old = os.umask(0o022)
    try:
        yield
    finally:
        os.umask(old)


def _modes(path: Path) -> dict[str, int]:
    files = [path, path.with_name(path.name + "-wal"), path.with_name(path.name + "-shm")]
    return {f.name: stat.S_IMODE(f.stat().st_mode) for f in files if f.exists()}


@pytest.mark.usefixtures("shell_umask")
def test_the_store_and_its_wal_and_shm_are_owner_only(tmp_path: Path) -> None:
    """They hold the API's token hashes and quarantined raw payloads."""
    path = tmp_path / "store.db"
    store = Store(path)
    store.tokens().create("ops", Role.OPERATOR, None, now_ms=T0)
    store.commit(now_ms=T0, quarantined=[_q(1)])
    assert _modes(path) == {"store.db": 0o600, "store.db-wal": 0o600, "store.db-shm": 0o600}
    store.close()


@pytest.mark.usefixtures("shell_umask")
def test_a_world_readable_store_left_by_an_older_version_is_narrowed(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    db = sqlite3.connect(path)  # as before: SQLite's default 0644 under umask 022
    db.execute("PRAGMA journal_mode = WAL")
    db.execute("CREATE TABLE t (x)")
    wal = path.with_name("store.db-wal")
    kept = sqlite3.connect(path)  # a second connection keeps the -wal and -shm on disk
    kept.execute("SELECT * FROM t").fetchall()
    db.close()
    assert wal.exists()
    assert _modes(path)["store.db"] == 0o644
    with capture_logs() as logs:
        Store(path).close()
    kept.close()
    assert set(_modes(path).values()) == {0o600}
    narrowed = [e["file"] for e in logs if e["event"] == "store.permissions_narrowed"]
    assert str(path) in narrowed


def test_refuses_a_newer_schema_and_bad_options(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    Store(path).close()
    db = sqlite3.connect(path)
    db.execute("UPDATE schema_version SET version = ?", (SCHEMA_VERSION + 1,))
    db.commit()
    db.close()
    with pytest.raises(StoreError, match="newer"):
        Store(path)
    with pytest.raises(ValueError, match="synchronous"):
        Store(tmp_path / "other.db", synchronous="OFF")
    Store(tmp_path / "full.db", synchronous="full").close()


def test_outbox_is_fifo_and_deletes_only_up_to_an_id(store: Store) -> None:
    store.commit(now_ms=NOW, lines=[(PRIORITY_EVENT, "a 1"), (PRIORITY_TELEMETRY, "b 2")])
    store.commit(now_ms=NOW + 5, lines=[(PRIORITY_TELEMETRY, "c 3")])
    assert store.outbox_depth() == 3
    assert store.outbox_oldest_ms() == NOW
    rows = store.outbox_peek(2)
    assert [text for _, text in rows] == ["a 1", "b 2"]
    store.outbox_delete(rows[-1][0])
    assert store.outbox_depth() == 1
    assert store.outbox_oldest_ms() == NOW + 5
    assert [text for _, text in store.outbox_peek(10)] == ["c 3"]
    store.outbox_delete(store.outbox_peek(10)[-1][0])
    assert store.outbox_depth() == 0
    assert store.outbox_oldest_ms() is None
    assert store.outbox_peek(10) == []


def test_without_an_influx_sink_lines_are_not_queued(store: Store) -> None:
    event = StateChanged("m1", "z", "acme", State.IDLE, State.RUNNING, T0)
    store.commit(now_ms=NOW, lines=[(PRIORITY_EVENT, "a 1")], events=[event], outbox=False)
    assert store.outbox_depth() == 0
    assert store.outbox_peek(10) == []
    assert [m["machine"] for m in store.machines()] == ["m1"]


def test_commit_is_atomic(store: Store) -> None:
    store.commit(now_ms=NOW, lines=[(PRIORITY_EVENT, "kept 1")])
    event = StateChanged("m1", "z", "acme", State.IDLE, State.RUNNING, T0)
    with pytest.raises(sqlite3.IntegrityError):
        # the last quarantine row violates NOT NULL, after the outbox and machines rows
        # were written: nothing of this commit may remain
        store.commit(
            now_ms=NOW,
            lines=[(PRIORITY_EVENT, "lost 2")],
            events=[event],
            quarantined=[_q(1), _q(2, reason=None)],  # type: ignore[arg-type]
        )
    assert store.outbox_depth() == 1
    assert [text for _, text in store.outbox_peek(10)] == ["kept 1"]
    assert store.machines() == []
    assert store.quarantine() == []
    # and the store is still usable
    store.commit(now_ms=NOW, lines=[(PRIORITY_EVENT, "next 3")])
    assert [text for _, text in store.outbox_peek(10)] == ["kept 1", "next 3"]


def test_reopen_keeps_outbox_and_tables(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    store = Store(path)
    store.commit(
        now_ms=NOW,
        lines=[(PRIORITY_EVENT, f"m v={i} {i}") for i in range(5)],
        events=[
            StateChanged("m1", "z", "acme", State.IDLE, State.RUNNING, T0),
            IdleWindowOpened("m1", "z", T0),
            Capacity("m1", "z", "acme", T0, available=True, idle_for_s=0.0, offered=False),
            ZoneCapacity("z", "laser", T0, 1, 1, 0, 0, 0),
        ],
        quarantined=[_q(1)],
    )
    store.outbox_delete(store.outbox_peek(2)[-1][0])
    store.close()

    reopened = Store(path)
    assert reopened.outbox_depth() == 3
    assert [text for _, text in reopened.outbox_peek(10)] == [f"m v={i} {i}" for i in (2, 3, 4)]
    assert reopened.machines() == [
        {
            "machine": "m1",
            "zone": "z",
            "owner": "acme",
            "state": "idle",
            "state_code": 2,
            "since_ms": T0,
        }
    ]
    assert len(reopened.windows(0)) == 1
    assert len(reopened.capacity()) == 1
    assert len(reopened.zone_capacity()) == 1
    assert len(reopened.quarantine()) == 1
    reopened.close()


def test_embedded_tables_follow_events(store: Store) -> None:
    store.commit(
        now_ms=NOW,
        events=[
            StateChanged("m1", "z", "acme", State.IDLE, State.RUNNING, T0),
            IdleWindowOpened("m1", "z", T0),
            Capacity("m1", "z", "acme", T0, available=False, idle_for_s=0.0, offered=False),
            SampleRejected("m1", T0, "nan", "power_w"),
        ],
    )
    assert store.windows(0) == [
        {
            "machine": "m1",
            "zone": "z",
            "start_ms": T0,
            "end_ms": None,
            "duration_s": None,
            "offered": False,
        }
    ]
    end = T0 + 1_200_000
    store.commit(
        now_ms=NOW,
        events=[
            Capacity(
                "m1", "z", "acme", T0 + 900_000, available=True, idle_for_s=900.0, offered=True
            ),
            IdleWindowClosed("m1", "z", T0, end, offered=True),
            IdleWindowOpened("m1", "z", T0),  # a late duplicate must not reopen it
            StateChanged("m1", "z", "acme", State.RUNNING, State.IDLE, end),
            ZoneCapacity("z", "laser", end, 2, 0, 1, 0, 1),
        ],
    )
    assert store.windows(0) == [
        {
            "machine": "m1",
            "zone": "z",
            "start_ms": T0,
            "end_ms": end,
            "duration_s": 1200.0,
            "offered": True,
        }
    ]
    assert store.machines()[0]["state"] == "running"
    assert store.machines()[0]["since_ms"] == end
    assert store.capacity() == [
        {
            "machine": "m1",
            "zone": "z",
            "owner": "acme",
            "ts_ms": T0 + 900_000,
            "available": True,
            "idle_for_s": 900.0,
            "offered": True,
        }
    ]
    assert store.zone_capacity() == [
        {
            "zone": "z",
            "capability": "laser",
            "ts_ms": end,
            "machines": 2,
            "available": 0,
            "running": 1,
            "down": 0,
            "offline": 1,
        }
    ]
    # a late (replayed) state change does not roll the machine back
    store.commit(
        now_ms=NOW, events=[StateChanged("m1", "z", "acme", State.DOWN, State.IDLE, T0 + 1)]
    )
    assert store.machines()[0]["state"] == "running"


def test_windows_query(store: Store) -> None:
    events: list[IdleWindowOpened | IdleWindowClosed] = []
    for i in range(5):
        start = T0 + i * 3_600_000
        events.append(IdleWindowClosed("m1", "z", start, start + 60_000, offered=False))
        events.append(IdleWindowClosed("m2", "z", start + 1, start + 60_000, offered=True))
    events.append(IdleWindowOpened("m3", "z", T0 - 86_400_000))  # old but still open
    store.commit(now_ms=NOW, events=events)

    since = T0 + 3 * 3_600_000
    rows = store.windows(since)
    assert [(r["machine"], r["start_ms"]) for r in rows] == [
        ("m2", T0 + 4 * 3_600_000 + 1),
        ("m1", T0 + 4 * 3_600_000),
        ("m2", T0 + 3 * 3_600_000 + 1),
        ("m1", T0 + 3 * 3_600_000),
        ("m3", T0 - 86_400_000),
    ]
    assert [r["start_ms"] for r in store.windows(since, machine="m1")] == [
        T0 + 4 * 3_600_000,
        T0 + 3 * 3_600_000,
    ]
    assert len(store.windows(0, limit=3)) == 3
    assert store.windows(0, machine="m3")[0]["end_ms"] is None


def test_quarantine_is_bounded_to_the_newest_rows(tmp_path: Path) -> None:
    store = Store(tmp_path / "q.db", quarantine_limit=10)
    store.commit(now_ms=NOW, quarantined=[_q(i) for i in range(7)])
    store.commit(now_ms=NOW, quarantined=[_q(i) for i in range(7, 25)])
    rows = store.quarantine(limit=100)
    assert store.quarantine_count() == 10
    assert [r["topic"] for r in rows] == [f"pilot/t/{i}" for i in range(24, 14, -1)]
    assert rows[0]["head"] == b"{bad"
    big = QuarantineRow(NOW, "mqtt", "t", None, "too large", b"x" * 100_000)
    store.commit(now_ms=NOW, quarantined=[big])
    assert len(store.quarantine(1)[0]["head"]) == 1024
    assert store.quarantine(1)[0]["machine"] is None


def test_dead_letter_moves_rows_out_of_the_outbox(store: Store) -> None:
    store.commit(now_ms=NOW, lines=[(PRIORITY_EVENT, f"l{i}") for i in range(4)])
    upto = store.outbox_peek(2)[-1][0]
    moved = store.outbox_dead_letter(upto, now_ms=NOW + 1, status=400, error="unable to parse")
    assert moved == 2
    assert store.outbox_depth() == 2
    assert [text for _, text in store.outbox_peek(10)] == ["l2", "l3"]
    assert store.dead_letter_count() == 2
    assert [(r["line"], r["status"]) for r in store.dead_letter()] == [
        ("l1", 400),
        ("l0", 400),
    ]


# -- schema version 7: outbox batches, resume log ----------------------------------------------


def test_a_version_6_outbox_is_moved_into_batches_in_order(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    Store(path).close()
    db = sqlite3.connect(path, isolation_level=None)
    # What version 6 had: one outbox row per line (and no batches yet).
    db.execute("DROP VIEW outbox")
    db.execute("DELETE FROM outbox_batch")
    db.execute(
        "CREATE TABLE outbox (id INTEGER PRIMARY KEY, priority INTEGER NOT NULL,"
        " enqueued_ms INTEGER NOT NULL, line TEXT NOT NULL)"
    )
    db.execute("CREATE INDEX outbox_priority ON outbox (priority, id)")
    old = [(PRIORITY_EVENT, NOW, "e0"), (PRIORITY_TELEMETRY, NOW, "t0")]
    old += [(PRIORITY_TELEMETRY, NOW + 1, f't{i} s="a,b \\"q\\""') for i in range(1, 6)]
    db.executemany("INSERT INTO outbox (priority, enqueued_ms, line) VALUES (?, ?, ?)", old)
    db.execute("UPDATE schema_version SET version = 6")
    db.close()

    with Store(path) as store:
        assert store.outbox_depth_by_priority() == {PRIORITY_EVENT: 1, PRIORITY_TELEMETRY: 6}
        assert [text for _, text in store.outbox_peek(100)] == [line for _, _, line in old]
        assert store.outbox_oldest_ms() == NOW
        version = store._db.execute("SELECT version FROM schema_version").fetchone()[0]
        assert version == SCHEMA_VERSION
        kind = store._db.execute("SELECT type FROM sqlite_master WHERE name = 'outbox'")
        assert kind.fetchone()[0] == "view"
        view = store._db.execute("SELECT priority, line FROM outbox ORDER BY id").fetchall()
        assert [(p, line) for p, line in view] == [(p, line) for p, _, line in old]


def test_a_commit_is_one_batch_per_run_of_a_priority(store: Store) -> None:
    lines = [(PRIORITY_TELEMETRY, "t0"), (PRIORITY_TELEMETRY, "t1"), (PRIORITY_EVENT, "e0")]
    lines += [(PRIORITY_TELEMETRY, "t2")]
    store.commit(now_ms=NOW, lines=lines)
    batches = store._db.execute("SELECT priority, count FROM outbox_batch ORDER BY id")
    assert [tuple(b) for b in batches] == [(PRIORITY_TELEMETRY, 2), (PRIORITY_EVENT, 1),
                                           (PRIORITY_TELEMETRY, 1)]
    view = store._db.execute("SELECT priority, line FROM outbox ORDER BY id").fetchall()
    assert [tuple(r) for r in view] == lines


def test_draining_stops_and_resumes_inside_a_batch(store: Store) -> None:
    store.commit(now_ms=NOW, lines=[(PRIORITY_TELEMETRY, f"t{i}") for i in range(10)])
    store.commit(now_ms=NOW + 1, lines=[(PRIORITY_TELEMETRY, f"u{i}") for i in range(3)])
    last, lines = store.outbox_lines(4)
    assert lines == ["t0", "t1", "t2", "t3"]
    assert [i for i, _ in store.outbox_peek(4)][-1] == last
    store.outbox_delete(last)
    assert store.outbox_depth() == 9
    last, lines = store.outbox_lines(7)
    assert lines == ["t4", "t5", "t6", "t7", "t8", "t9", "u0"]
    moved = store.outbox_dead_letter(last, now_ms=NOW + 2, status=400, error="x")
    assert moved == 7
    assert [r["line"] for r in store.dead_letter()][::-1] == lines
    assert store.outbox_lines(100)[1] == ["u1", "u2"]
    assert store.outbox_depth_by_priority() == {PRIORITY_TELEMETRY: 2}
    assert store.outbox_lines(100)[0] == store.outbox_peek(100)[-1][0]


def test_the_resume_log_is_folded_into_resume(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from pilotline.gateway.store import resume as resume_module
    from pilotline.rules.machine import Checkpoint

    monkeypatch.setattr(resume_module, "RESUME_COMPACT_ROWS", 3)

    def cp(machine: str, ts: int) -> Checkpoint:
        return Checkpoint(machine, State.RUNNING, T0, None, False, ts, None, ts,
                          State.RUNNING, None, 0)

    path = tmp_path / "r.db"
    store = Store(path)

    def counts() -> tuple[int, int]:
        log = store._db.execute("SELECT COUNT(*) FROM resume_log").fetchone()[0]
        resume = store._db.execute("SELECT COUNT(*) FROM resume").fetchone()[0]
        return log, resume

    store.commit(now_ms=NOW, resume=[cp("m1", T0 + 1), cp("m2", T0 + 1)])
    store.commit(now_ms=NOW, resume=[cp("m1", T0 + 2)])
    assert counts() == (2, 0)
    assert store.resume_points() == [cp("m1", T0 + 2), cp("m2", T0 + 1)]
    store.commit(now_ms=NOW, resume=[cp("m3", T0 + 3)])  # the third: folded
    assert counts() == (0, 3)
    assert store.resume_points() == [cp("m1", T0 + 2), cp("m2", T0 + 1), cp("m3", T0 + 3)]
    store.commit(now_ms=NOW, resume=[cp("m2", T0 + 4)])
    store.close()  # a log row left behind: folded when the file is opened again
    reopened = Store(path)
    store = reopened
    assert counts() == (0, 3)
    assert reopened.resume_points() == [cp("m1", T0 + 2), cp("m2", T0 + 4), cp("m3", T0 + 3)]
    reopened.close()


# -- the transaction helper and the families' composition ---------------------------------------


def test_a_transaction_commits_whole_and_reports_only_then(store: Store) -> None:
    committed: list[str] = []
    db = store._db
    with Transaction(db) as tx:
        db.execute("INSERT INTO reports (kind, period_ms, written_ms) VALUES ('k', 1, 1)")
        tx.after_commit(lambda: committed.append("one"))
        assert committed == []
    assert committed == ["one"]

    def fails() -> None:
        with Transaction(db) as tx:
            db.execute("INSERT INTO reports (kind, period_ms, written_ms) VALUES ('k', 2, 1)")
            tx.after_commit(lambda: committed.append("two"))
            raise ValueError("in the block")

    with pytest.raises(ValueError, match="in the block"):
        fails()
    assert committed == ["one"]
    assert not db.in_transaction
    assert store.last_report("k") == 1


def test_alert_checkpoints_from_a_commit_and_from_an_operator_action_share_one_row(
    store: Store,
) -> None:
    alerts = store.alert_state()
    assert alerts is store.alert_state()
    store.commit(now_ms=NOW, alert_state=[("dispatch", '{"acks":[]}')])
    assert alerts.load("dispatch") == {"acks": []}
    alerts.save("dispatch", {"acks": ["a"]}, NOW + 1)
    assert alerts.load("dispatch") == {"acks": ["a"]}
    with pytest.raises(sqlite3.IntegrityError):
        store.commit(
            now_ms=NOW + 2,
            alert_state=[("dispatch", '{"acks":["b"]}')],
            quarantined=[_q(1, reason=None)],  # type: ignore[arg-type]
        )
    assert alerts.load("dispatch") == {"acks": ["a"]}  # rolled back with the commit
    rows = store._rows("SELECT core, saved_ms FROM alert_state")
    assert rows == [{"core": "dispatch", "saved_ms": NOW + 1}]


def test_a_report_is_recorded_with_its_lines_or_not_at_all(store: Store) -> None:
    store.commit_report("utilization", T0, lines=[(PRIORITY_EVENT, "u 1")], now_ms=NOW)
    assert store.last_report("utilization") == T0
    assert [text for _, text in store.outbox_peek(10)] == ["u 1"]
    store.commit_report("utilization", T0 + 1, lines=[(PRIORITY_EVENT, "u 2")], now_ms=NOW,
                        outbox=False)
    assert store.last_report("utilization") == T0 + 1
    assert store.outbox_depth() == 1
