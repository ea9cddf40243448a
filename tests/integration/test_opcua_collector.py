"""The OPC UA collector against a real asyncua server in another process (no mock)."""

from __future__ import annotations

import asyncio
import contextlib
import shutil
import time
from collections.abc import AsyncIterator, Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from asyncua import Client, ua
from tests.peers import DemoServer, free_port

from pilotline.collectors.opcua.collector import OpcuaCollector, OpcuaMachine
from pilotline.collectors.opcua.config import OpcuaSource
from pilotline.demo.opcua_server import NAMESPACE, demo_nodes
from pilotline.rules.sample import Quality, Sample

pytestmark = pytest.mark.integration


@pytest.fixture
def server() -> Iterator[DemoServer]:
    with DemoServer() as s:
        yield s


@contextlib.asynccontextmanager
async def running(collector: OpcuaCollector) -> AsyncIterator[OpcuaCollector]:
    task = asyncio.create_task(collector.run(), name="opcua-collector")
    try:
        yield collector
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await task


async def wait_until(condition: Callable[[], bool], timeout_s: float = 10.0) -> None:
    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s} s")
        await asyncio.sleep(0.02)


def collector_for(
    endpoint: str, samples: list[Sample], pki: Path, **source: object
) -> OpcuaCollector:
    machines = {
        m: OpcuaMachine(
            OpcuaSource.model_validate(
                {
                    "endpoint": endpoint,
                    "nodes": demo_nodes(m),
                    "publishing_interval_ms": 100,
                    "sampling_interval_ms": 50,
                    **({"state_model": "packml"} if m == "bonder-01" else {}),
                    **source,
                }
            ),
            "state",
        )
        for m in ("laser-cut-01", "bonder-01", "laser-mark-01")
    }
    machines["probe"] = OpcuaMachine(
        OpcuaSource.model_validate(
            {
                "endpoint": endpoint,
                "nodes": {
                    "value": f"nsu={NAMESPACE};s=test.Value",
                    "text": f"nsu={NAMESPACE};s=test.Text",
                    "flag": f"nsu={NAMESPACE};s=test.Flag",
                    "ghost": f"nsu={NAMESPACE};s=NoSuch.Node",
                },
                "publishing_interval_ms": 100,
                "sampling_interval_ms": 50,
                **source,
            }
        ),
        None,
    )
    return OpcuaCollector(
        endpoint,
        machines,
        samples.append,
        pki_dir=pki,
        reconnect_max_s=0.5,
        connect_timeout_s=5,
        keepalive_s=1,
        heartbeat_timeout_s=4,
        retry_missing_s=0.5,
    )


async def write(endpoint: str, name: str, dv: ua.DataValue) -> None:
    async with Client(endpoint) as client:
        idx = await client.get_namespace_index(NAMESPACE)
        await client.get_node(ua.NodeId(f"test.{name}", idx)).write_value(dv)


async def test_values_times_quality_and_missing_node(server: DemoServer, tmp_path: Path) -> None:
    samples: list[Sample] = []
    collector = collector_for(server.endpoint, samples, tmp_path / "pki")
    async with running(collector):
        await wait_until(lambda: collector.health().connected)
        health = collector.health()
        assert health.monitored_items == 3 * 4 + 3
        assert health.missing_nodes == [
            f"probe.ghost nsu={NAMESPACE};s=NoSuch.Node: BadNodeIdUnknown"
        ]
        # machine states arrive in each vocabulary; PackML codes become names
        await wait_until(
            lambda: (
                {s.machine for s in samples if "state" in s.values}
                >= {"laser-cut-01", "bonder-01", "laser-mark-01"}
            )
        )
        words = {s.machine: s.values["state"] for s in samples if "state" in s.values}
        assert words["laser-cut-01"] in ("Executing", "NotExecuting", "OutOfService")
        assert words["bonder-01"] in ("Idle", "Execute", "Held", "Aborted", "Resetting")

        at = datetime(2026, 11, 27, 8, 0, 0, 123000, tzinfo=UTC)
        at_ms = int(at.timestamp() * 1000)
        await write(
            server.endpoint,
            "Value",
            ua.DataValue(ua.Variant(812.5, ua.VariantType.Double), SourceTimestamp=at),
        )
        await wait_until(lambda: any(s.values.get("value") == 812.5 for s in samples))
        hit = next(s for s in samples if s.values.get("value") == 812.5)
        assert hit.machine == "probe"
        assert hit.quality is Quality.GOOD
        # the probe's initial values came with server times; the stamp never goes back
        assert hit.ts_ms >= at_ms

        await write(
            server.endpoint,
            "Value",
            ua.DataValue(
                ua.Variant(5.0, ua.VariantType.Double),
                ua.StatusCode(ua.StatusCodes.BadSensorFailure),
            ),
        )
        await wait_until(lambda: collector.health().bad_values >= 1)
        bad = [s for s in samples if s.machine == "probe" and s.quality is Quality.BAD]
        assert bad
        await write(server.endpoint, "Flag", ua.DataValue(ua.Variant(True, ua.VariantType.Boolean)))
        await write(
            server.endpoint, "Text", ua.DataValue(ua.Variant("hello", ua.VariantType.String))
        )
        await wait_until(lambda: any(s.values.get("flag") == 1.0 for s in samples))
        await wait_until(lambda: any(s.values.get("text") == "hello" for s in samples))
        # heartbeats: empty samples for machines with data, at least once a second
        await wait_until(lambda: collector.health().heartbeats >= 2)
        assert any(s.values == {} and s.machine == "laser-cut-01" for s in samples)


async def test_server_killed_and_restarted_recovers_by_itself(
    server: DemoServer, tmp_path: Path
) -> None:
    samples: list[Sample] = []
    collector = collector_for(server.endpoint, samples, tmp_path / "pki")
    async with running(collector):
        await wait_until(lambda: collector.health().connected)
        server.kill()
        await wait_until(lambda: not collector.health().connected, timeout_s=8)
        down = collector.health()
        assert down.down_since_ms is not None
        assert down.last_error
        await asyncio.sleep(1.0)  # a few refused attempts while the server is away
        assert collector.health().last_error
        count = len(samples)
        server.start()
        await wait_until(lambda: collector.health().connected, timeout_s=15)
        up = collector.health()
        assert up.reconnects == 1
        assert up.monitored_items == 3 * 4 + 3  # every monitored item re-created
        assert up.down_since_ms is None
        await wait_until(lambda: any("power_w" in s.values for s in samples[count:]), timeout_s=5)


async def test_unreachable_server_at_start_is_reported(tmp_path: Path) -> None:
    port = free_port()
    endpoint = f"opc.tcp://127.0.0.1:{port}"
    samples: list[Sample] = []
    collector = collector_for(endpoint, samples, tmp_path / "pki")
    async with running(collector):
        await wait_until(lambda: collector.health().last_error is not None)
        health = collector.health()
        assert not health.connected
        assert health.down_since_ms is not None
        assert "refused" in (health.last_error or "").lower()


async def test_sign_and_encrypt_trust_both_ways(tmp_path: Path) -> None:
    server_pki = tmp_path / "server-pki"
    server = DemoServer("--secure", "--pki", str(server_pki)).start()
    try:
        client_pki = tmp_path / "client-pki"
        samples: list[Sample] = []
        secure = {"security_policy": "Basic256Sha256", "security_mode": "SignAndEncrypt"}
        collector = collector_for(server.endpoint, samples, client_pki, **secure)
        async with running(collector):
            # 1. the server's certificate is not trusted yet: refused, saved, told how
            await wait_until(lambda: "not trusted" in (collector.health().last_error or ""))
            error = collector.health().last_error or ""
            assert "cp " in error
            assert str(client_pki / "trusted") in error
            rejected = list((client_pki / "rejected").iterdir())
            assert len(rejected) == 1
            shutil.copy(rejected[0], client_pki / "trusted")
            # 2. now the server refuses our (generated, kept) certificate
            await wait_until(
                lambda: (
                    "does not trust" in (collector.health().last_error or "")
                    or "BadCertificateUntrusted" in (collector.health().last_error or "")
                    or "Bad" in (collector.health().last_error or "")
                )
            )
            assert not collector.health().connected
            own = client_pki / "own" / "cert.der"
            assert own.is_file()
            shutil.copy(own, server_pki / "trusted-clients" / "pilotline.der")
            # 3. trusted both ways: data flows over SignAndEncrypt
            await wait_until(lambda: collector.health().connected, timeout_s=15)
            await wait_until(lambda: any("power_w" in s.values for s in samples))
        # a wrong certificate (another client identity) is refused
        other_pki = tmp_path / "other-pki"
        (other_pki / "trusted").mkdir(parents=True)
        shutil.copy(rejected[0], other_pki / "trusted")
        other = collector_for(server.endpoint, [], other_pki, **secure)
        async with running(other):
            await wait_until(lambda: other.health().last_error is not None, timeout_s=15)
            await asyncio.sleep(0.5)
            assert not other.health().connected
            assert (other_pki / "own" / "cert.der").read_bytes() != own.read_bytes()
    finally:
        server.kill()
