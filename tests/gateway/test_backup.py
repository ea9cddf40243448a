"""``pilotline backup``'s copy (store/backup.py) on real store files: the copy holds what the
store holds, the source is neither locked nor changed, and a target is whole or absent.
(Beside a running gateway under load, and the restore: tests/integration/test_backup_restore.py.)"""

from __future__ import annotations

import sqlite3
import stat
from pathlib import Path

import pytest
from tests.fakes import T0

from pilotline.gateway.cli import main
from pilotline.gateway.store import (
    SCHEMA_VERSION,
    QuarantineRow,
    Store,
    StoreError,
    StoreInUseError,
)
from pilotline.gateway.store.backup import backup, default_name
from pilotline.gateway.store.lock import StoreLock
from pilotline.rules import State, StateChanged
from pilotline.rules.events import IdleWindowOpened

ROWS = "SELECT machine, ts_ms, state FROM state_history ORDER BY ts_ms"


def filled(path: Path, *, exclusive: bool = False) -> Store:
    store = Store(path, exclusive=exclusive)
    store.commit(
        now_ms=T0,
        events=[
            StateChanged("m1", "z1", "acme", State.RUNNING, State.OFFLINE, T0),
            StateChanged("m1", "z1", "acme", State.IDLE, State.RUNNING, T0 + 1000),
            IdleWindowOpened("m1", "z1", T0 + 1000),
        ],
        lines=[(1, "telemetry value=1 1")],
        quarantined=[QuarantineRow(T0, "mqtt", "t", "m1", "malformed_json", b"{")],
    )
    return store


def read(path: Path, sql: str) -> list[tuple[object, ...]]:
    db = sqlite3.connect(path)
    try:
        return [tuple(row) for row in db.execute(sql)]
    finally:
        db.close()


def test_a_store_held_by_a_gateway_is_copied_without_its_lock(tmp_path: Path) -> None:
    source = tmp_path / "gw.db"
    with filled(source, exclusive=True):  # as a running gateway holds it
        copied = backup(source, tmp_path / "copy.db", now_ms=T0)
        with pytest.raises(StoreInUseError):  # the gateway still holds its lock
            StoreLock.check(source)
    assert copied.target == tmp_path / "copy.db"
    assert copied.schema_version == SCHEMA_VERSION
    assert copied.latest_state_ms == T0 + 1000
    assert copied.rows["state_history"] == 2
    assert copied.rows["idle_windows open"] == 1
    assert copied.rows["outbox lines"] == 1
    assert copied.rows["quarantine"] == 1
    assert read(copied.target, ROWS) == read(source, ROWS)
    assert read(copied.target, "PRAGMA integrity_check") == [("ok",)]
    assert stat.S_IMODE(copied.target.stat().st_mode) == 0o600
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
    report = copied.describe()
    assert report[0] == f"copied {source} to {tmp_path / 'copy.db'}"
    assert "latest state change: 2026-11-27T00:00:01.000+00:00" in report


def test_the_source_is_read_only_an_older_file_is_not_migrated(tmp_path: Path) -> None:
    source = tmp_path / "old.db"
    filled(source).close()
    db = sqlite3.connect(source)
    db.execute("UPDATE schema_version SET version = 6")
    db.commit()
    db.close()
    copied = backup(source, tmp_path / "copy.db", now_ms=T0)
    assert copied.schema_version == 6
    assert read(source, "SELECT version FROM schema_version") == [(6,)]


def test_a_folder_gets_a_stamped_name_and_nothing_is_overwritten_by_mistake(
    tmp_path: Path,
) -> None:
    source = tmp_path / "gw.db"
    filled(source).close()
    backups = tmp_path / "backups"
    backups.mkdir()
    first = backup(source, backups, now_ms=T0)
    assert first.target == backups / "gw-20261127T000000Z.db"
    assert default_name(Path("/var/lib/pilotline/pilotline.db"), T0 + 61_500) == (
        "pilotline-20261127T000101Z.db"
    )
    with pytest.raises(StoreError, match="exists: choose another name, or --overwrite"):
        backup(source, backups, now_ms=T0)
    assert backup(source, backups, now_ms=T0, overwrite=True).target == first.target
    with pytest.raises(StoreError, match="is the store itself"):
        backup(source, source, now_ms=T0, overwrite=True)
    with pytest.raises(StoreError, match="no store here"):
        backup(tmp_path / "missing.db", tmp_path / "x.db", now_ms=T0)
    with pytest.raises(StoreError, match="no folder"):
        backup(source, tmp_path / "nowhere" / "x.db", now_ms=T0)
    assert sorted(p.name for p in backups.iterdir()) == [first.target.name]


def test_a_file_that_is_no_database_leaves_no_copy(tmp_path: Path) -> None:
    source = tmp_path / "gw.db"
    source.write_bytes(b"not a database" * 100)
    with pytest.raises(StoreError, match="backup failed"):
        backup(source, tmp_path / "copy.db", now_ms=T0)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["gw.db"]


def test_the_command_prints_what_it_copied(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(
        f"site: s\nstore: {tmp_path / 'gw.db'}\nmqtt: {{url: 'mqtt://127.0.0.1:1'}}\n"
        "zones:\n  - id: z1\n    machines:\n"
        "      - {id: m1, owner: acme, mqtt: {topic: t/m1}, state: {signal: state}}\n"
    )
    assert main(["backup", "-c", str(config), "--to", str(tmp_path / "copy.db")]) == 1
    assert "no store here" in capsys.readouterr().err
    filled(tmp_path / "gw.db").close()
    assert main(["backup", "-c", str(config), "--to", str(tmp_path / "copy.db")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == f"copied {tmp_path / 'gw.db'} to {tmp_path / 'copy.db'}"
    assert "integrity ok" in out[1]
    assert "state_history          2" in out
