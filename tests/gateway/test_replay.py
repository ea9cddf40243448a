"""Replay without any network: reading inputs, determinism, and equality with a live run.

The live run is the gateway shell driven as the event loop drives it: samples arrive a little
after their source time through ``Ingest.sample`` on a moving clock, and the rules timer ticks
on the watermark every second. The replay feeds the same samples with no timer at all.
"""

from __future__ import annotations

import json
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from tests.fakes import T0, Clock
from tests.sites import POWER_STATE, machine_config, site_yaml

from pilotline.gateway.config import SiteConfig, load_config
from pilotline.gateway.replay import (
    ReplayError,
    parse_line,
    read_file,
    read_jsonl,
    read_line_protocol,
    replay,
)
from pilotline.gateway.service import Gateway, ServiceOptions
from pilotline.gateway.sinks.influx.lineproto import line
from pilotline.gateway.sinks.influx.points import telemetry_line
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules import Sample

ZONES = {
    "photonics": [machine_config("laser-01", "acme-optics", capabilities=["laser-cutting"])],
    "imaging": [
        machine_config(
            "cam-02", "lumen-group", capabilities=["optical-inspection"], state=POWER_STATE
        )
    ],
}


def laser(second: int) -> str:
    if second == 33:
        return "Dancing"  # not in the map: rejected, quarantined
    return "NotExecuting" if 20 <= second < 50 else "Executing"


def cam(second: int) -> float:
    if second == 25:
        return 150.0  # a blip shorter than the debounce
    return 10.0 if 10 <= second < 40 or 70 <= second < 100 else 300.0


def scenario() -> list[Sample]:
    samples = []
    for s in range(120):
        ts = T0 + s * 1000
        if s < 60:  # laser-01 goes silent after 60 s: stale, offline
            samples.append(Sample("laser-01", ts, {"state": laser(s), "temperature_c": 20 + s}))
        samples.append(Sample("cam-02", ts + 400, {"power_w": cam(s)}))
    return samples


@pytest.fixture
def config(tmp_path: Path) -> SiteConfig:
    path = tmp_path / "site.yaml"
    path.write_text(
        site_yaml(
            ZONES,
            store=tmp_path / "live.db",
            defaults={"debounce_s": 2, "stale_after_s": 5, "min_idle_s": 5,
                      "publish_interval_s": 30},
        )
    )
    return load_config(path)


def run_live(config: SiteConfig, samples: list[Sample], end_ms: int) -> int:
    """The gateway as the event loop runs it; returns where its core's time started."""
    lateness = 2_000
    clock = Clock(T0 - 3_000)
    gateway = Gateway(config, writer=MemoryWriter(), clock_ms=clock,
                      options=ServiceOptions(lateness_ms=lateness))
    started = clock.ms - lateness

    def tick() -> None:
        gateway.ingest.advance(clock.ms - lateness)

    tick()
    for sample in samples:  # each arrives 300 ms after its source time
        while clock.ms + 1000 <= sample.ts_ms + 300:
            clock.ms += 1000
            tick()
            gateway.commit()
        clock.ms = sample.ts_ms + 300
        gateway.ingest.sample(sample, None)
    while clock.ms - lateness < end_ms:
        clock.ms = min(clock.ms + 1000, end_ms + lateness)
        tick()
    gateway.commit()
    gateway.store.close()
    return started


TABLES = ("machines", "state_history", "idle_windows", "capacity", "zone_capacity")


def dump(path: Path, tables: tuple[str, ...] = TABLES) -> dict[str, list[tuple[Any, ...]]]:
    db = sqlite3.connect(path)
    try:
        return {t: db.execute(f"SELECT * FROM {t} ORDER BY 1, 2, 3").fetchall() for t in tables}
    finally:
        db.close()


def machine_lines(lines: list[str]) -> list[str]:
    return sorted(line for line in lines if not line.startswith("zone_capacity,"))


def zone_ticks(lines: list[str]) -> list[tuple[str, str]]:
    zone = [line.split(" ") for line in lines if line.startswith("zone_capacity,")]
    return sorted((tags, ts) for tags, _fields, ts in zone)


def test_a_replay_equals_the_live_run(config: SiteConfig, tmp_path: Path) -> None:
    samples = scenario()
    end = T0 + 180_000
    started = run_live(config, samples, end)
    out = tmp_path / "replay.db"
    shuffled = samples[1::2] + samples[::2]  # input order does not matter, event time does
    writer = MemoryWriter()
    result = replay(config, shuffled, out_store=out, from_ms=started, to_ms=end, influx=True,
                    writer=writer)
    assert result.samples == len(samples)
    assert result.flushed is True
    live, replayed = dump(config.store), dump(out)
    assert live == replayed
    assert [r[3] for r in live["state_history"] if r[0] == "laser-01"] == [
        "running", "idle", "running", "offline"
    ]
    assert [(r[2], r[3]) for r in live["idle_windows"]] == [
        (T0 + 10_400, T0 + 40_400), (T0 + 70_400, T0 + 100_400), (T0 + 20_000, T0 + 50_000)
    ]
    # the points too (the replay's outbox was drained: compare what the writer got)
    db = sqlite3.connect(config.store)
    live_lines = sorted(r[0] for r in db.execute("SELECT line FROM outbox")
                        if not r[0].startswith("telemetry,"))
    db.close()
    # Every machine's points are the same. A zone report counts what the gateway knows when
    # its clock reaches the tick: live, a machine's own clock may already be up to `lateness`
    # past it, so the counts (not the ticks) may differ from the replay's.
    assert machine_lines(live_lines) == machine_lines(writer.lines)
    assert zone_ticks(live_lines) == zone_ticks(writer.lines)
    assert result.rejected == {("rules", "unmapped_state"): 1}


def test_replaying_twice_gives_identical_stores(config: SiteConfig, tmp_path: Path) -> None:
    samples = scenario()
    everything = (*TABLES, "outbox", "quarantine", "reports")
    stores = []
    for name in ("one.db", "two.db"):
        out = tmp_path / name
        replay(config, samples, out_store=out, to_ms=T0 + 180_000, influx=True, telemetry=True,
               writer=MemoryWriter(reject=lambda _: False), flush_timeout_s=0.0)
        stores.append(dump(out, everything))
    assert stores[0] == stores[1]
    assert any(row[3].startswith("telemetry,") for row in stores[0]["outbox"])


def test_the_replay_writes_the_lines_the_gateway_writes(config: SiteConfig, tmp_path: Path) -> None:
    samples = scenario()
    writers = [MemoryWriter(), MemoryWriter()]
    for name, writer in zip(("a.db", "b.db"), writers, strict=True):
        replay(config, samples, out_store=tmp_path / name, to_ms=T0 + 180_000, influx=True,
               writer=writer)
    assert writers[0].lines == writers[1].lines
    kinds = {text.split(",")[0] for text in writers[0].lines}
    assert kinds == {"machine_state", "idle_window", "capacity", "zone_capacity"}


def test_an_existing_store_is_kept_unless_overwritten(config: SiteConfig, tmp_path: Path) -> None:
    out = tmp_path / "r.db"
    replay(config, scenario(), out_store=out)
    with pytest.raises(ReplayError, match="exists"):
        replay(config, scenario(), out_store=out)
    replay(config, scenario(), out_store=out, overwrite=True)
    with pytest.raises(ReplayError, match="live gateway's store"):
        replay(config, scenario(), out_store=config.store, overwrite=True)


# -- reading ---------------------------------------------------------------------------------


def test_line_protocol_reads_back_what_the_writer_wrote() -> None:
    tags = {"site": "s p", "zone": "a,b", "machine": "m=1"}
    fields = {"f 1": 1.5, "n": 3, "ok": True, "text": 'say "hi" \\ there'}
    text = line("telemetry", tags, fields, T0)
    assert parse_line(text) == ("telemetry", tags, fields, T0 * 1_000_000)
    own = telemetry_line("unit", "imaging", "cam-02", {"power_w": 812.0, "state": "x"}, T0)
    assert own is not None
    assert parse_line(own) == (
        "telemetry", {"machine": "cam-02", "site": "unit", "zone": "imaging"},
        {"power_w": 812.0}, T0 * 1_000_000,
    )
    for bad in ("telemetry", "telemetry,machine a=1", 'telemetry a="open', "t a=1 soon"):
        with pytest.raises(ValueError, match=r"."):
            parse_line(bad)


def test_line_protocol_input_keeps_telemetry_of_the_site() -> None:
    lines = [
        "# a comment",
        "telemetry,machine=cam-02,site=unit,zone=imaging power_w=10,ok=t 1795737600000000000",
        "telemetry,machine=cam-02,site=other,zone=imaging power_w=10 1795737600000000000",
        "machine_state,machine=cam-02,site=unit state=\"idle\",state_code=2i 1795737600000000000",
        "telemetry,machine=cam-02,site=unit power_w=10",
        "telemetry,site=unit power_w=10 1795737600000000000",
        "garbage",
    ]
    data = read_line_protocol(lines, site="unit")
    assert data.samples == [Sample("cam-02", T0, {"power_w": 10.0})]
    assert data.skipped == {"other_site": 1, "measurement_machine_state": 1, "no_ts": 1,
                            "no_machine": 1, "malformed_line": 1}


def test_json_lines_carry_everything_and_bad_lines_are_counted(tmp_path: Path) -> None:
    good = {"machine": "laser-01", "ts": "2026-11-27T00:00:01Z", "state": "Executing",
            "power_w": 5, "quality": "uncertain"}
    lines = [json.dumps(good), "", "{not json", "[1]", json.dumps({"ts": T0}),
             json.dumps({"machine": "m"}), json.dumps({"machine": "m", "ts": T0, "x": None})]
    data = read_jsonl(lines)
    (sample,) = data.samples
    assert (sample.machine, sample.ts_ms, dict(sample.values)) == (
        "laser-01", T0 + 1000, {"state": "Executing", "power_w": 5.0}
    )
    assert data.skipped == {"malformed_json": 1, "not_an_object": 1, "no_machine": 1,
                            "no_ts": 1, "wrong_type": 1}
    path = tmp_path / "history.txt"  # no .jsonl suffix: recognised by its first line
    path.write_text("\n" + json.dumps(good) + "\n")
    assert len(read_file(path).samples) == 1


def test_line_protocol_loses_string_states_and_says_so(config: SiteConfig, tmp_path: Path) -> None:
    lines = [
        telemetry_line("unit", "photonics" if s.machine == "laser-01" else "imaging",
                       s.machine, s.values, s.ts_ms)
        for s in scenario()
    ]
    data = read_line_protocol([t for t in lines if t is not None], site="unit")
    result = replay(config, data.samples, out_store=tmp_path / "lp.db", to_ms=T0 + 180_000)
    assert result.stateless == ["laser-01"]
    states = dump(tmp_path / "lp.db")["state_history"]
    assert {r[0] for r in states} == {"cam-02"}  # laser-01 stayed offline: nothing recorded


def test_replay_does_not_load_the_http_stack() -> None:
    """``pilotline replay`` builds a Gateway without its API: FastAPI and uvicorn stay out."""
    code = (
        "import sys, pilotline.gateway.cli, pilotline.gateway.replay, pilotline.gateway.timefmt\n"
        "print(sorted(m for m in sys.modules if m.split('.')[0] in ('fastapi', 'uvicorn')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
