"""One plant, several gateways: `pilotline run --shard K/N` processes on one Mosquitto and one
victoria-metrics split the machines exactly, before and after a shard is added.

Each gateway is the real console script in a child process, started from a configuration
that differs from the others only by its API port: the store and the MQTT session of each
come from its shard (`pilotline.shard-KofN.db`, `<client_id>-shard-KofN`). The plant is 20
MQTT machines in three zones, every zone split between the shards (`shard_by: machine`), so
each zone's `zone_capacity` is written in parts tagged `shard`, which must add up to the
zone, never to more.

The InfluxQL that docs/scaling.md gives for summing those parts is run on a real InfluxDB
1.x at the end.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import time
from collections.abc import Iterator
from itertools import combinations
from pathlib import Path
from typing import Any

import httpx
import pytest
from tests.peers import InfluxDB1, PeerUnavailableError, VictoriaMetrics
from tests.process import pilotline_command, until
from tests.sites import POWER_STATE, live_site, machine_config

from pilotline.demo.broker import MosquittoBroker, free_port
from pilotline.demo.publisher import publish_timeline
from pilotline.gateway.config import SiteConfig, load_config
from pilotline.gateway.config.sharding import owned_machines
from pilotline.gateway.shard import Shard
from pilotline.gateway.sinks.influx.points import event_lines
from pilotline.rules.events import ZoneCapacity

pytestmark = pytest.mark.integration

ZONES = {"photonics": ("ph", 10), "imaging": ("im", 6), "coating": ("co", 4)}
MACHINES = {f"{p}-{i:02d}": zone for zone, (p, n) in ZONES.items() for i in range(n)}
ZONE_SIZE = {zone: n for zone, (_, n) in ZONES.items()}
RUNNING, IDLE = 1.0, 2.0  # state codes


def topic(machine: str) -> str:
    return f"plant/{MACHINES[machine]}/{machine}/telemetry"


def site_yaml(mqtt_url: str, influx_url: str, api_port: int) -> str:
    zones = {
        zone: [
            machine_config(m, capabilities=["inspect"], topic=topic(m), state=POWER_STATE)
            for m, its_zone in MACHINES.items()
            if its_zone == zone
        ]
        for zone in ZONES
    }
    return live_site(
        zones,
        site="sharded-site",
        mqtt_url=mqtt_url,
        client_id="gw-sharding",
        port=api_port,
        influx_url=influx_url,
        store="./var/gw.db",  # the same in every file: each shard derives its own
        log={"format": "json"},
        defaults={"debounce_s": 0, "stale_after_s": 600, "min_idle_s": 0, "publish_interval_s": 1},
    )


class ShardProcess:
    """`pilotline run -c FILE --shard K/N` as a child process, with its API and a token."""

    def __init__(self, workdir: Path, shard: Shard, mqtt_url: str, influx_url: str) -> None:
        self.shard = shard
        self.port = free_port()
        self.api = f"http://127.0.0.1:{self.port}"
        self.config = workdir / f"site-{shard.label}.yaml"
        self.config.write_text(site_yaml(mqtt_url, influx_url, self.port))
        token = subprocess.run(
            [*pilotline_command(), "token", "create", "-c", str(self.config),
             "--shard", str(shard), "--role", "operator", "--name", "tests"],
            capture_output=True, text=True, timeout=60, check=True,
        )
        self.headers = {"Authorization": f"Bearer {token.stdout.strip()}"}
        self.stderr_path = workdir / f"gateway-{shard.label}.stderr"
        with self.stderr_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [*pilotline_command(), "run", "-c", str(self.config), "--shard", str(shard)],
                cwd=workdir,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=err,
                env={**os.environ, "PYTHONUNBUFFERED": "1"},
            )

    def get(self, path: str) -> Any:
        if self.proc.poll() is not None:
            tail = self.stderr_path.read_text()[-2000:]
            pytest.fail(f"gateway {self.shard} exited with {self.proc.returncode}:\n{tail}")
        response = httpx.get(f"{self.api}{path}", headers=self.headers, timeout=5)
        response.raise_for_status()
        return response.json()

    def wait_subscribed(self) -> dict[str, Any]:
        def ready() -> dict[str, Any] | None:
            health: dict[str, Any] = self.get("/health")
            mqtt = health.get("mqtt", {})
            return health if mqtt.get("connected") and mqtt.get("healthy") else None

        return until(ready, 30, f"gateway {self.shard} connected and subscribed")

    def machines(self) -> dict[str, str]:
        return {m["id"]: m["state"] for m in self.get("/api/machines")}

    def samples(self) -> dict[str, int]:
        """`pilotline_samples_total{machine}` of this gateway's /metrics."""
        text = httpx.get(f"{self.api}/metrics", headers=self.headers, timeout=5).text
        counts = {}
        for line in text.splitlines():
            if line.startswith("pilotline_samples_total{"):
                machine = line.split('machine="')[1].split('"')[0]
                counts[machine] = int(float(line.rsplit(" ", 1)[1]))
        return counts

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                code = self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                pytest.fail(f"gateway {self.shard} still running 30 s after SIGTERM")
            assert code == 0, self.stderr_path.read_text()[-2000:]

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(timeout=10)


def publish(mqtt_url: str, states: dict[str, float]) -> int:
    """One sample per machine at the current time: power 300 W (running) or 10 W (idle)."""
    ts = time.time_ns() // 1_000_000
    messages = [
        (topic(m), json.dumps({"ts": ts, "power_w": 300.0 if code == RUNNING else 10.0}).encode())
        for m, code in states.items()
    ]
    publish_timeline(mqtt_url, messages, client_id="sharding-plant")
    return ts


def latest_states(vm: VictoriaMetrics, since_ms: int) -> dict[str, list[float]]:
    """Machine -> its `machine_state.state_code` values stamped at or after ``since_ms``."""
    out: dict[str, list[float]] = {}
    for s in vm.export('{__name__="machine_state_state_code",site="sharded-site"}'):
        values = [v for t, v in zip(s["timestamps"], s["values"], strict=True) if t >= since_ms]
        if values:
            out.setdefault(s["metric"]["machine"], []).extend(values)
    return out


def zone_parts(
    vm: VictoriaMetrics, field: str, since_ms: int
) -> dict[str, dict[str, dict[int, float]]]:
    """zone -> shard tag -> {timestamp: value} of `zone_capacity.<field>` (capability=all)
    stamped after ``since_ms`` (a report at the very millisecond of the samples may precede
    them)."""
    out: dict[str, dict[str, dict[int, float]]] = {}
    selector = f'{{__name__="zone_capacity_{field}",site="sharded-site",capability="all"}}'
    for s in vm.export(selector):
        shard = s["metric"].get("shard", "")
        points = {t: v for t, v in zip(s["timestamps"], s["values"], strict=True) if t > since_ms}
        if points:
            out.setdefault(s["metric"]["zone"], {}).setdefault(shard, {}).update(points)
    return out


def zone_sums(parts: dict[str, dict[int, float]], shards: set[str]) -> dict[int, float]:
    """Sum over ``shards`` at every timestamp where each of them wrote its part."""
    common = set.intersection(*(set(parts.get(s, {})) for s in shards))
    return {t: sum(parts[s][t] for s in shards) for t in sorted(common)}


def run_layout(
    count: int,
    *,
    workdir: Path,
    site: SiteConfig,
    broker: MosquittoBroker,
    vm: VictoriaMetrics,
    states: dict[str, float],
    started: list[ShardProcess],
) -> list[ShardProcess]:
    """Start N shards, publish one state per machine, and check the split end to end."""
    shards = [Shard(k, count) for k in range(1, count + 1)]
    gateways = [ShardProcess(workdir, s, broker.url, vm.url) for s in shards]
    started.extend(gateways)
    expected = {str(s): set(owned_machines(site, s)) for s in shards}
    for gw in gateways:
        health = gw.wait_subscribed()
        # each subscribes to the topics of its own machines, and only those
        assert set(health["mqtt"]["subscriptions"]) == {topic(m) for m in expected[str(gw.shard)]}
    since = publish(broker.url, states)

    def settled() -> list[dict[str, str]] | None:
        views = [gw.machines() for gw in gateways]
        done = all(
            state == ("running" if states[m] == RUNNING else "idle")
            for view in views
            for m, state in view.items()
        )
        return views if done else None

    views = until(settled, 30, f"every machine of the {count} shards in its published state")

    # No machine tracked by two gateways, none by no gateway, each where the hash puts it.
    owned = [set(view) for view in views]
    assert all(not (a & b) for a, b in combinations(owned, 2))
    assert set().union(*owned) == set(MACHINES)
    for gw, mine in zip(gateways, owned, strict=True):
        assert mine == expected[str(gw.shard)]
        assert set(gw.samples()) == mine  # it received nothing of another shard's machines
    # The store and the session are the shard's own.
    for gw in gateways:
        assert (workdir / "var" / f"gw.shard-{gw.shard.label}.db").exists()
    assert not (workdir / "var" / "gw.db").exists()

    # In the time-series store: every machine's state written, each once.
    def all_written() -> dict[str, list[float]] | None:
        written = latest_states(vm, since)
        return written if set(written) == set(MACHINES) else None

    written = until(all_written, 30, "a machine_state point of every machine")
    assert written == {m: [code] for m, code in states.items()}

    # zone_capacity: each zone is written in parts, one per shard owning some of it, and the
    # parts add up to the zone: its machines counted once, its running machines once.
    running = {z: sum(states[m] == RUNNING for m in MACHINES if MACHINES[m] == z) for z in ZONES}

    def zones_reported() -> dict[str, dict[str, dict[int, float]]] | None:
        parts = zone_parts(vm, "running", since)
        sums = {z: zone_sums(parts.get(z, {}), owners_of(z, expected)) for z in ZONES}
        return parts if all(sums.values()) else None

    for zone, parts in until(zones_reported, 30, "zone_capacity parts of every shard").items():
        assert set(zone_sums(parts, owners_of(zone, expected)).values()) == {running[zone]}
    for zone, parts in zone_parts(vm, "machines", since).items():
        assert set(parts) == owners_of(zone, expected)  # this layout's shards, tagged
        assert "" not in parts  # no untagged whole-zone series beside the parts
        sums = zone_sums(parts, set(parts))
        assert sums
        assert set(sums.values()) == {float(ZONE_SIZE[zone])}  # never counted twice
    return gateways


def owners_of(zone: str, expected: dict[str, set[str]]) -> set[str]:
    return {tag for tag, mine in expected.items() if any(MACHINES[m] == zone for m in mine)}


def test_two_then_three_gateways_split_one_plant_exactly(
    tmp_path: Path, broker: MosquittoBroker, vm: VictoriaMetrics
) -> None:
    whole = tmp_path / "site.yaml"
    whole.write_text(site_yaml(broker.url, vm.url, free_port()))
    site = load_config(whole)
    # the layout exercises what it should: every zone split in both layouts
    for count in (2, 3):
        for zone in ZONES:
            owners = {
                k for k in range(1, count + 1)
                for m in owned_machines(site, Shard(k, count)) if MACHINES[m] == zone
            }
            assert len(owners) > 1, (zone, count)
    started: list[ShardProcess] = []
    try:
        first = {m: RUNNING if i % 2 == 0 else IDLE for i, m in enumerate(MACHINES)}
        two = run_layout(
            2, workdir=tmp_path, site=site, broker=broker, vm=vm, states=first, started=started
        )
        for gw in two:
            gw.stop()  # a clean stop flushes each shard's outbox
        # Add a shard: the same file, three gateways. Machines only move to the new shard.
        assert all(
            set(owned_machines(site, Shard(k, 3))) <= set(owned_machines(site, Shard(k, 2)))
            for k in (1, 2)
        )
        moved_at = time.time_ns() // 1_000_000
        flipped = {m: IDLE if code == RUNNING else RUNNING for m, code in first.items()}
        run_layout(
            3, workdir=tmp_path, site=site, broker=broker, vm=vm, states=flipped, started=started
        )
        # the two-shard series stopped with their gateways: nothing of them after the move
        stale = zone_parts(vm, "machines", moved_at)
        assert all(set(parts) <= {"1/3", "2/3", "3/3"} for parts in stale.values())
    finally:
        for gw in started:
            gw.kill()


# --------------------------------------------------------------------------- dashboards


@pytest.fixture
def influx() -> Iterator[InfluxDB1]:
    try:
        server = InfluxDB1().start()
    except PeerUnavailableError as exc:
        pytest.skip(str(exc))
    try:
        yield server
    finally:
        with contextlib.suppress(Exception):
            server.close()


SUM_NOW = (
    'SELECT sum("available") AS "available", sum("machines") AS "machines" FROM ('
    'SELECT last("available") AS "available", last("machines") AS "machines" '
    'FROM "zone_capacity" WHERE time > now() - 2m '
    'GROUP BY "zone", "capability", "shard") GROUP BY "zone", "capability"'
)
SUM_OVER_TIME = (
    'SELECT sum("machines") AS "machines" FROM ('
    'SELECT last("machines") AS "machines" FROM "zone_capacity" '
    "WHERE \"capability\" = 'all' AND time >= {start}ms AND time < {end}ms "
    'GROUP BY time(1m), "zone", "shard" fill(none)) '
    'WHERE time >= {start}ms AND time < {end}ms GROUP BY time(1m), "zone"'
)


def test_documented_influxql_sums_zone_parts_across_a_reshard(influx: InfluxDB1) -> None:
    """docs/scaling.md's queries on parts written by 2 shards, then 3 (publish every 60 s)."""
    minute = 60_000
    now = time.time_ns() // 1_000_000 // minute * minute
    start = now - 10 * minute
    lines = []
    # 10 machines in one zone, 4 available. Shards 1/2, 2/2 until 5 min ago, then 1/3..3/3.
    layouts = [
        (range(start, now - 5 * minute, minute), {"1/2": (6, 3), "2/2": (4, 1)}),
        (range(now - 5 * minute, now + minute, minute), {"1/3": (4, 2), "2/3": (3, 1),
                                                          "3/3": (3, 1)}),
    ]
    for stamps, parts in layouts:
        for ts in stamps:
            for tag, (machines, available) in parts.items():
                event = ZoneCapacity("photonics", "all", ts, machines, available, 0, 0, 0)
                lines += event_lines("s", event, tag)
    influx.write(lines)

    [result] = influx.query(SUM_NOW)
    [series] = result["series"]
    row = dict(zip(series["columns"], series["values"][0], strict=True))
    assert (row["machines"], row["available"]) == (10, 4)  # not 20 after the reshard

    [result] = influx.query(SUM_OVER_TIME.format(start=start, end=now + minute))
    [series] = result["series"]
    assert [v for _, v in series["values"]] == [10] * 11  # every minute, across the change
