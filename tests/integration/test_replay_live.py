"""``pilotline replay`` against what a live gateway really received over MQTT.

A scripted scenario goes through a real Mosquitto to a running gateway (moving clock, as in
test_end_to_end.py); the same messages, saved as JSON lines, and the telemetry points the
gateway wrote, saved as line protocol, are then replayed by the real console script. The
replay's store must hold what the live store holds.
"""

from __future__ import annotations

import asyncio
import json
import sqlite3
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import T0, Clock
from tests.sites import live_site, pilot_camera, pilot_laser
from tests.waiting import publish_on_time

from pilotline.demo.broker import MosquittoBroker, find_mosquitto, free_port
from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway, ServiceOptions
from pilotline.gateway.sinks.influx.writer import MemoryWriter

pytestmark = [
    pytest.mark.integration,
    pytest.mark.skipif(find_mosquitto() is None, reason="mosquitto is not installed"),
]

END = T0 + 600_000


def site(mqtt_url: str, store: Path, port: int) -> str:
    """test_end_to_end.py's site, with no InfluxDB listening at its URL."""
    return live_site(
        {"photonics": [pilot_laser("laser-cutting", "laser-marking")], "imaging": [pilot_camera()]},
        site="test-site",
        mqtt_url=mqtt_url,
        client_id=f"gw-replay-{port}",
        port=port,
        influx_url="http://127.0.0.1:1",
        store=store,
        defaults={"debounce_s": 2, "stale_after_s": 5, "min_idle_s": 5, "publish_interval_s": 30,
                  "offering": "always"},
    )


TOPIC = {
    "laser-01": "pilot/photonics/laser-01/telemetry",
    "cam-02": "pilot/imaging/cam-02/telemetry",
}
TABLES = ("machines", "state_history", "idle_windows", "capacity", "zone_capacity")


def scenario() -> list[tuple[str, dict[str, Any]]]:
    out = []
    for s in range(60):
        ts = T0 + s * 1000
        state = "NotExecuting" if 20 <= s < 50 else "Executing"
        power = 150.0 if s == 25 else (10.0 if 10 <= s < 40 else 300.0)
        out.append(("laser-01", {"ts": ts, "state": state, "temperature_c": 20.0 + s / 10}))
        out.append(("cam-02", {"ts": ts, "power_w": power}))
    return out


async def until(condition: Callable[[], bool], timeout_s: float = 15.0) -> None:
    async with asyncio.timeout(timeout_s):
        while not condition():
            await asyncio.sleep(0.05)


def dump(path: Path) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in TABLES}
    finally:
        db.close()


def pilotline(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "pilotline.gateway.cli", *args],
        capture_output=True,
        text=True,
        timeout=60,
        stdin=subprocess.DEVNULL,
        check=False,
    )


async def test_the_replay_of_what_the_gateway_received_equals_what_it_produced(
    tmp_path: Path,
) -> None:
    port = free_port()
    with MosquittoBroker() as broker:
        path = tmp_path / "site.yaml"
        path.write_text(site(broker.url, tmp_path / "live.db", port))
        clock = Clock(T0)
        writer = MemoryWriter()
        gateway = Gateway(
            load_config(path), writer=writer, clock_ms=clock, options=ServiceOptions(lateness_ms=0)
        )
        task = asyncio.create_task(gateway.run(api=False))
        await until(lambda: gateway.health().get("mqtt", {}).get("healthy", False))
        messages = [(TOPIC[m], json.dumps(p).encode()) for m, p in scenario()]
        await publish_on_time(
            broker.url, messages, clock, lambda: sum(gateway.metrics.samples.values())
        )
        await until(lambda: sum(gateway.metrics.samples.values()) == len(messages))
        clock.ms = END
        await until(lambda: gateway.plant.now_ms == END)
        await until(lambda: gateway.store.outbox_depth() == 0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
    live = dump(tmp_path / "live.db")
    assert [r[3] for r in live["state_history"] if r[0] == "laser-01"] == [
        "running",
        "idle",
        "running",
        "offline",
    ]

    # JSON lines: everything the payloads carried
    jsonl = tmp_path / "history.jsonl"
    jsonl.write_text("".join(json.dumps({"machine": m, **p}) + "\n" for m, p in scenario()))
    out = tmp_path / "replay.db"
    done = pilotline(
        "replay",
        "-c",
        str(path),
        str(jsonl),
        "--from",
        str(T0),
        "--to",
        "2026-11-27T00:10:00Z",
        "--out-store",
        str(out),
    )
    assert done.returncode == 0, done.stderr
    assert "replayed 120 samples" in done.stderr
    assert "replay: 120/120 samples" in done.stderr  # plain progress lines off a terminal
    assert dump(out) == live

    # line protocol: the telemetry points the gateway wrote; laser-01's state was a string
    lp = tmp_path / "telemetry.lp"
    lp.write_text("\n".join(x for x in writer.lines if x.startswith("telemetry,")) + "\n")
    out_lp = tmp_path / "replay-lp.db"
    done = pilotline(
        "replay",
        "-c",
        str(path),
        str(lp),
        "--from",
        str(T0),
        "--to",
        str(END),
        "--out-store",
        str(out_lp),
    )
    assert done.returncode == 0, done.stderr
    assert "no sample carried the state signal of laser-01" in done.stderr
    from_lp = dump(out_lp)
    assert [r for r in from_lp["state_history"] if r[0] == "cam-02"] == [
        r for r in live["state_history"] if r[0] == "cam-02"
    ]
    assert [r for r in from_lp["idle_windows"] if r[0] == "cam-02"] == [
        r for r in live["idle_windows"] if r[0] == "cam-02"
    ]

    # the same again is refused without --overwrite, and identical with it
    again = pilotline(
        "replay",
        "-c",
        str(path),
        str(jsonl),
        "--from",
        str(T0),
        "--to",
        str(END),
        "--out-store",
        str(out),
    )
    assert again.returncode == 1
    assert "exists" in again.stderr
    again = pilotline(
        "replay",
        "-c",
        str(path),
        str(jsonl),
        "--from",
        str(T0),
        "--to",
        str(END),
        "--out-store",
        str(out),
        "--overwrite",
    )
    assert again.returncode == 0, again.stderr
    assert dump(out) == live


def test_replay_refuses_what_it_cannot_do(tmp_path: Path) -> None:
    path = tmp_path / "site.yaml"
    path.write_text(site("mqtt://127.0.0.1:1", tmp_path / "l.db", free_port()))
    missing = pilotline(
        "replay",
        "-c",
        str(path),
        str(tmp_path / "nope.jsonl"),
        "--out-store",
        str(tmp_path / "r.db"),
    )
    assert missing.returncode == 1
    assert "cannot read" in missing.stderr
    neither = pilotline("replay", "-c", str(path), "--out-store", str(tmp_path / "r.db"))
    assert neither.returncode == 1
    assert "give an INPUT file" in neither.stderr
    bad_time = pilotline("replay", "-c", str(path), str(path), "--from", "yesterday")
    assert bad_time.returncode == 1
    assert "--from 'yesterday'" in bad_time.stderr


def test_replay_reads_the_telemetry_of_an_influxdb_time_range(tmp_path: Path) -> None:
    from tests.peers import InfluxDB1, PeerUnavailableError

    from pilotline.gateway.replay import read_influx
    from pilotline.gateway.sinks.influx.points import telemetry_line

    try:
        influx = InfluxDB1().start()
    except PeerUnavailableError as exc:
        pytest.skip(str(exc))
    try:
        lines = [
            telemetry_line(
                "test-site",
                "imaging" if m == "cam-02" else "photonics",
                m,
                {k: v for k, v in p.items() if k != "ts"},
                p["ts"],
            )
            for m, p in scenario()
        ]
        other = telemetry_line("elsewhere", "imaging", "cam-02", {"power_w": 1.0}, T0)
        influx.write([x for x in (*lines, other) if x is not None])
        data = read_influx(
            influx.url, influx.database, T0, T0 + 30_000, site="test-site", chunk_ms=10_000
        )
        cams = sorted((s.ts_ms, dict(s.values)) for s in data.samples if s.machine == "cam-02")
        assert len(cams) == 30
        assert cams[0] == (T0, {"power_w": 300.0})
        lasers = [s for s in data.samples if s.machine == "laser-01"]
        assert len(lasers) == 30
        assert set(lasers[0].values) == {"temperature_c"}  # the string state is not there
    finally:
        influx.close()
