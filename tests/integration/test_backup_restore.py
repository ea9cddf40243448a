"""``pilotline backup`` beside a running ``pilotline run`` (real Mosquitto, samples arriving
all the time), and the restore procedure of docs/operator-guide.md: the copy is the store as
of one commit, and a gateway started on it resumes from it."""

from __future__ import annotations

import contextlib
import json
import os
import shutil
import signal
import sqlite3
import stat
import subprocess
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml
from tests.auth import cli_bearer
from tests.process import pilotline_command, until
from tests.sites import CAMERA_TOPIC, LASER_TOPIC, live_site, pilot_camera, pilot_laser

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.demo.publisher import publish_timeline
from pilotline.gateway.store.schema import SCHEMA_VERSION

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

STOP_TIMEOUT_S = 15.0


class Gateway:
    """``pilotline run -c FILE`` as a child process, its stderr (JSON lines) in a file."""

    def __init__(self, config: Path, log: Path) -> None:
        self.log = log
        with log.open("wb") as err:
            self.proc = subprocess.Popen(
                [*pilotline_command(), "run", "-c", str(config)],
                cwd=config.parent,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def events(self) -> list[dict[str, Any]]:
        out = []
        for line in self.log.read_text().splitlines():
            with contextlib.suppress(ValueError):
                record = json.loads(line)
                if isinstance(record, dict):
                    out.append(record)
        return out

    def describe(self) -> str:
        return "\n".join(self.log.read_text().splitlines()[-30:])

    def wait_healthy(self, api: str) -> None:
        def healthy() -> bool:
            if self.proc.poll() is not None:
                pytest.fail(f"gateway exited with {self.proc.returncode}:\n{self.describe()}")
            response = httpx.get(f"{api}/health", timeout=2)
            return response.status_code == 200 and bool(response.json()["mqtt"]["connected"])

        until(healthy, 20, "a healthy gateway with MQTT connected")

    def stop(self) -> None:
        self.proc.send_signal(signal.SIGTERM)
        try:
            code = self.proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            pytest.fail(f"still running {STOP_TIMEOUT_S} s after SIGTERM")
        assert code == 0, self.describe()

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


class Publisher:
    """Samples stamped now, every 20 ms, in a thread until stopped: the laser changes state
    every 5 samples, the camera (by its power) every 7, so the store gets state changes and
    idle windows all the time."""

    def __init__(self, url: str) -> None:
        self.sent = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=publish_timeline, args=(url, self._messages()),
                                        kwargs={"client_id": "backup-test-publisher"})
        self._thread.start()

    def _messages(self) -> Iterator[tuple[str, bytes]]:
        last = 0
        while not self._stop.is_set():
            ts = max(last + 1, time.time_ns() // 1_000_000)
            last = ts
            state = "Executing" if (self.sent // 5) % 2 else "NotExecuting"
            power = 300.0 if (self.sent // 7) % 2 else 10.0
            yield LASER_TOPIC, json.dumps({"ts": ts, "state": state}).encode()
            yield CAMERA_TOPIC, json.dumps({"ts": ts, "power_w": power}).encode()
            self.sent += 1
            time.sleep(0.02)

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=30)
        assert not self._thread.is_alive()


def read(store: Path, sql: str) -> list[tuple[Any, ...]]:
    """Rows of a store, read-only (a running gateway's too)."""
    db = sqlite3.connect(f"{store.absolute().as_uri()}?mode=ro", uri=True)
    try:
        return [tuple(row) for row in db.execute(sql)]
    finally:
        db.close()


HISTORY = "SELECT machine, ts_ms, state FROM state_history ORDER BY machine, ts_ms"
WINDOWS = "SELECT machine, start_ms, end_ms FROM idle_windows ORDER BY machine, start_ms"


@pytest.fixture
def gateways() -> Iterator[list[Gateway]]:
    started: list[Gateway] = []
    yield started
    for gateway in started:
        gateway.kill()


def test_a_backup_taken_under_load_restores_into_a_gateway_that_resumes_from_it(
    tmp_path: Path, broker: MosquittoBroker, gateways: list[Gateway]
) -> None:
    port = free_port()
    api = f"http://127.0.0.1:{port}"
    live = tmp_path / "live"
    live.mkdir()
    config = live / "site.yaml"
    config.write_text(
        live_site(
            {"photonics": [pilot_laser()], "imaging": [pilot_camera()]},
            site="backup-site",
            mqtt_url=broker.url,
            client_id=f"gw-backup-{port}",
            port=port,
            store=live / "gw.db",
            defaults={"debounce_s": 0, "stale_after_s": 600, "min_idle_s": 0,
                      "publish_interval_s": 30, "offering": "always"},
        )
    )
    auth = cli_bearer(pilotline_command(), config)
    gateway = Gateway(config, tmp_path / "live.log")
    gateways.append(gateway)
    gateway.wait_healthy(api)

    publisher = Publisher(broker.url)
    try:
        until(lambda: len(read(live / "gw.db", HISTORY)) >= 40, 20, "40 state changes")
        backups = tmp_path / "backups"
        backups.mkdir()
        done = subprocess.run(
            [*pilotline_command(), "backup", "-c", str(config), "--to", str(backups)],
            capture_output=True, text=True, timeout=60, check=False,
        )
        assert done.returncode == 0, done.stderr
        (copy,) = backups.iterdir()
        # the gateway went on: it kept its lock, and samples kept arriving into its store
        copied = read(copy, HISTORY)
        until(lambda: len(read(live / "gw.db", HISTORY)) >= len(copied) + 40, 20,
              "40 more state changes after the backup")
    finally:
        publisher.stop()
    assert gateway.proc.poll() is None, gateway.describe()
    time.sleep(0.5)  # the last samples committed
    gateway.stop()

    # what it printed: where from, where to, checked, how much
    print(done.stdout)
    lines = done.stdout.splitlines()
    assert lines[0] == f"copied {live / 'gw.db'} to {copy}"
    assert "integrity ok" in lines[1]
    assert f"schema version {SCHEMA_VERSION}" in lines[1]
    counts = dict(line.rsplit(None, 1) for line in lines[3:])
    assert int(counts["state_history"]) == len(copied)
    assert int(counts["machines"]) == 2
    assert int(counts["api_tokens"]) == 1
    assert copy.name.startswith("gw-")
    assert copy.suffix == ".db"
    assert stat.S_IMODE(copy.stat().st_mode) == 0o600  # token hashes, raw payloads

    # the copy is the store as of one commit: each machine's history up to the copy's last
    # change is exactly the live store's, and the live store went on past it
    final = read(live / "gw.db", HISTORY)
    assert len(final) > len(copied)
    for machine in ("laser-01", "cam-02"):
        mine = [row for row in copied if row[0] == machine]
        assert len(mine) >= 10, machine
        point = mine[-1][1]
        assert mine == [row for row in final if row[0] == machine and row[1] <= point]
    windows = read(copy, WINDOWS)
    final_windows = {(m, start): end for m, start, end in read(live / "gw.db", WINDOWS)}
    assert any(end is not None for _, _, end in windows)
    for machine, start, end in windows:
        assert (machine, start) in final_windows
        if end is not None:
            assert final_windows[(machine, start)] == end

    # restore, as the operator guide says, in a new place: the copy as the store (no -wal,
    # no -shm beside it), the same configuration but for the store's path
    restored = tmp_path / "restored"
    restored.mkdir()
    shutil.copy2(copy, restored / "gw.db")
    doc = yaml.safe_load(config.read_text())
    doc["store"] = str(restored / "gw.db")
    restored_config = restored / "site.yaml"
    restored_config.write_text(yaml.safe_dump(doc, sort_keys=False))
    machines_at_backup = dict(read(copy, "SELECT machine, state FROM machines"))

    second = Gateway(restored_config, tmp_path / "restored.log")
    gateways.append(second)
    second.wait_healthy(api)
    resumed = [e for e in second.events() if e["event"] == "gateway.resumed"]
    assert resumed, second.describe()
    assert resumed[0]["machines"] == 2
    assert resumed[0]["states"] == machines_at_backup
    listed = httpx.get(f"{api}/api/machines", headers=auth, timeout=5)  # the copied token
    assert listed.status_code == 200, listed.text
    assert {m["id"]: m["state"] for m in listed.json()} == machines_at_backup
    second.stop()

    assert read(restored / "gw.db", "PRAGMA integrity_check") == [("ok",)]
    assert set(copied) <= set(read(restored / "gw.db", HISTORY))
    restored_windows = {(m, start): end for m, start, end in read(restored / "gw.db", WINDOWS)}
    for machine, start, end in windows:
        assert (machine, start) in restored_windows
        if end is not None:
            assert restored_windows[(machine, start)] == end
