"""One writer per store: the gateway's exclusive lock on ``<store>.lock`` (store/lock.py).

The cross-process story (a second ``pilotline run`` refused, a SIGKILLed holder never
blocking its successor) is in tests/integration/test_cli.py; here the lock's rules
within one process, where a ``flock`` on a second open of the file conflicts just as it
does from another process.
"""

from __future__ import annotations

import json
import os
import socket
import subprocess
from pathlib import Path

import pytest
from tests.process import pilotline_command
from tests.sites import pilot_laser, site_yaml

from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.store import Store, StoreInUseError
from pilotline.gateway.store.lock import lock_path


def test_an_exclusive_store_refuses_a_second_writer_and_names_the_holder(
    tmp_path: Path,
) -> None:
    path = tmp_path / "var" / "store.db"
    with Store(path, exclusive=True):
        with pytest.raises(StoreInUseError) as refused:
            Store(path, exclusive=True)
        assert refused.value.path == path
        assert refused.value.holder.pid == os.getpid()
        assert refused.value.holder.host == socket.gethostname()
        assert str(path) in str(refused.value)
        assert f"pid {os.getpid()}" in str(refused.value)
        # readers and short writers (pilotline token) take no lock
        with Store(path) as reader:
            assert reader.outbox_depth() == 0
        record = json.loads(lock_path(path).read_text())
        assert record["pid"] == os.getpid()
    # closed: the lock is let go, the next writer takes it
    Store(path, exclusive=True).close()
    assert lock_path(path).exists()  # never deleted (see lock.py)


def test_a_refused_store_is_left_untouched(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    with Store(path, exclusive=True):
        before = {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()}
        with pytest.raises(StoreInUseError):
            Store(path, exclusive=True)
        assert {p.name: p.stat().st_mtime_ns for p in tmp_path.iterdir()} == before


def test_a_lock_file_left_by_a_dead_holder_means_nothing(tmp_path: Path) -> None:
    path = tmp_path / "store.db"
    lock_path(path).write_text(json.dumps({"pid": 999_999, "host": "elsewhere"}) + "\n")
    with Store(path, exclusive=True):
        assert json.loads(lock_path(path).read_text())["pid"] == os.getpid()


def test_the_gateway_holds_its_store_until_it_stops(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(site_yaml({"photonics": [pilot_laser()]}, store=tmp_path / "gw.db"))
    site = load_config(config)
    first = Gateway(site)
    with pytest.raises(StoreInUseError, match=f"pid {os.getpid()}"):
        Gateway(site)
    first.store.close()
    Gateway(site).store.close()


def test_replay_neither_overwrites_nor_writes_a_store_in_use(tmp_path: Path) -> None:
    config = tmp_path / "site.yaml"
    config.write_text(site_yaml({"photonics": [pilot_laser()]}, store=tmp_path / "live.db"))
    samples = tmp_path / "samples.jsonl"
    samples.write_text('{"machine": "laser-01", "ts": 1795737600000, "state": "Executing"}\n')
    out = tmp_path / "other.db"
    command = [*pilotline_command(), "replay", "-c", str(config), str(samples),
               "--out-store", str(out), "--overwrite"]

    def replay() -> subprocess.CompletedProcess[str]:
        return subprocess.run(command, capture_output=True, text=True, timeout=60, check=False,
                              stdin=subprocess.DEVNULL)

    with Store(out, exclusive=True) as held:
        held.commit(now_ms=0, lines=[(0, "kept value=1 1")])
        refused = replay()
        assert refused.returncode == 1, refused.stderr
        assert str(out) in refused.stderr
        assert f"pid {os.getpid()}" in refused.stderr
        assert held.outbox_depth() == 1  # the file was neither deleted nor replaced
    done = replay()
    assert done.returncode == 0, done.stderr
