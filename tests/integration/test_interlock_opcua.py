"""The soft interlock's OPC UA node on a real asyncua server: written at the booking's start
and read back; a node the server will not let us write, and a readback that never follows,
are reported (log, metric, /health ``unknown``, an ``interlock: unknown`` alert to a real
webhook receiver) and retried, never shown as enabled."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import pytest
import yaml
from asyncua import Server, ua
from structlog.testing import capture_logs
from tests.fakes import T0, Clock
from tests.integration.test_notify_webhook import Receiver
from tests.peers import free_port
from tests.sites import machine_config, site_yaml
from tests.waiting import wait_for

from pilotline.gateway.config import load_config
from pilotline.gateway.service import Gateway
from pilotline.gateway.service.interlock import Interlock
from pilotline.gateway.sinks.influx.writer import MemoryWriter
from pilotline.rules.booking import BookingRules, Request

pytestmark = pytest.mark.integration

MIN = 60_000
HOUR = 60 * MIN
START = T0 + HOUR
NS = "urn:pilotline:interlock-test"


@pytest.fixture
async def server() -> AsyncIterator[tuple[str, dict[str, Any]]]:
    """asyncua's own server: ``A.Enable`` writable, ``B.Enable`` read-only, ``C.Enable``
    writable with ``C.Enabled`` beside it that nothing ever sets (a controller that does not
    take the permission)."""
    endpoint = f"opc.tcp://127.0.0.1:{free_port()}"
    srv = Server()
    await srv.init()
    srv.set_endpoint(endpoint)
    idx = await srv.register_namespace(NS)
    objects = srv.nodes.objects
    nodes: dict[str, Any] = {}
    for name, writable in (("A.Enable", True), ("B.Enable", False), ("C.Enable", True),
                           ("C.Enabled", False)):
        var = await objects.add_variable(ua.NodeId(name, idx), name, False)
        if writable:
            await var.set_writable()
        nodes[name] = var
    for machine in "ABC":
        state = await objects.add_variable(ua.NodeId(f"{machine}.State", idx), "s", "Idle")
        nodes[f"{machine}.State"] = state
    async with srv:
        yield endpoint, nodes


def config_text(tmp_path: Path, endpoint: str) -> str:
    def machine(m: str, interlock: dict[str, Any]) -> dict[str, Any]:
        source = {"endpoint": endpoint, "nodes": {"state": f"nsu={NS};s={m}.State"}}
        return machine_config(
            m.lower(), opcua=source, interlock={"mqtt": False, "opcua": interlock}
        )

    return site_yaml(
        {
            "z": [
                machine("A", {"node": f"nsu={NS};s=A.Enable"}),
                machine("B", {"node": f"nsu={NS};s=B.Enable"}),
                machine("C", {"node": f"nsu={NS};s=C.Enable", "readback": f"nsu={NS};s=C.Enabled"}),
            ]
        },
        mqtt=None,
        influx=None,
        store=tmp_path / "gw.db",
        defaults={"debounce_s": 0, "stale_after_s": 3600},
        interlock={"interval_s": 0.1, "retry_s": 0.3, "timeout_s": 3},
    )


async def test_the_node_is_written_and_read_back_and_a_refusal_is_reported(
    tmp_path: Path, server: tuple[str, dict[str, Any]]
) -> None:
    endpoint, nodes = server
    path = tmp_path / "site.yaml"
    path.write_text(config_text(tmp_path, endpoint))
    clock = Clock(T0)
    gateway = Gateway(
        load_config(path), writer=MemoryWriter(), clock_ms=clock, monotonic_ms=clock.monotonic,
        collectors=False,
    )
    book = gateway.store.reservations()
    rules = BookingRules(min_length_ms=15 * MIN)
    for m in "abc":
        held = book.request(Request(m, "smallco", START, START + HOUR), rules,
                            [(T0, T0 + 24 * HOUR)], T0).reservation
        assert held is not None
        book.confirm(held.id, T0, approval=False, by="smallco")
    interlock: Interlock = gateway.interlock

    def opcua(machine: str) -> dict[str, Any]:
        return gateway.health()["interlock"]["machines"][machine]["opcua"]  # type: ignore[no-any-return]

    with capture_logs() as logs:
        task = asyncio.create_task(gateway.run(api=False))
        try:
            # before the start: every node written false; A reads it back, B refuses the
            # write, C's readback already says false
            await wait_for(lambda: opcua("a")["state"] == "disabled")
            clock.set(START)
            await wait_for(lambda: opcua("a")["state"] == "enabled")
            assert await nodes["A.Enable"].read_value() is True

            await wait_for(lambda: interlock.signals()["c"].signal.enabled)
            faults = gateway.metrics.interlock_faults
            await wait_for(lambda: faults[("c", "readback_mismatch")] >= 2)
            await wait_for(lambda: faults[("b", "write_failed")] >= 2)
            # retried: the written node says true, its readback does not; never "enabled"
            assert await nodes["C.Enable"].read_value() is True
            assert opcua("c")["state"] == "unknown"
            assert opcua("c")["read"] is False
            assert opcua("b")["state"] == "unknown"
            # asyncua answers a write to a read-only node so
            assert opcua("b")["error"].startswith("write failed: BadUserAccessDenied")
            health = gateway.health()
            assert health["healthy"] is False
            assert health["interlock"]["healthy"] is False
            assert "c: readback mismatch" in health["interlock"]["why"]

            # the controller takes the permission: C reads back and is enabled
            await nodes["C.Enabled"].write_value(True)
            await wait_for(lambda: opcua("c")["state"] == "enabled")
        finally:
            task.cancel()
            await asyncio.gather(task, return_exceptions=True)

    events = [(e["event"], e.get("machine")) for e in logs if e["event"].startswith("interlock.")]
    assert ("interlock.write_failed", "b") in events
    assert ("interlock.readback_mismatch", "c") in events
    assert ("interlock.written", "c") in events
    # once per streak, however many retries
    assert events.count(("interlock.readback_mismatch", "c")) == 1


async def test_a_node_that_does_not_read_back_raises_an_alert_until_it_does(
    tmp_path: Path, server: tuple[str, dict[str, Any]]
) -> None:
    """C's readback never follows: the ``interlock: unknown`` rule fires through the alert
    pipeline (dispatcher, a real webhook receiver), once however many retries, and resolves
    when the controller takes the permission."""
    endpoint, nodes = server
    receiver = Receiver()
    path = tmp_path / "site.yaml"
    text = config_text(tmp_path, endpoint)
    alerts = {
        "group_wait": "0s", "group_interval": "1s",
        "rules": [{"name": "interlock-unknown", "severity": "critical",
                   "interlock": "unknown", "for": "1s", "machines": ["c"]}],
        "webhooks": [{"name": "ops", "url": f"{receiver.url}/ops"}],
    }
    path.write_text(text + yaml.dump({"alerts": alerts}))
    clock = Clock(T0)
    gateway = Gateway(
        load_config(path), writer=MemoryWriter(), clock_ms=clock, monotonic_ms=clock.monotonic,
        collectors=False,
    )
    book = gateway.store.reservations()
    held = book.request(Request("c", "smallco", START, START + HOUR),
                        BookingRules(min_length_ms=15 * MIN), [(T0, T0 + 24 * HOUR)],
                        T0).reservation
    assert held is not None
    book.confirm(held.id, T0, approval=False, by="smallco")

    def firing() -> list[tuple[str, str, str]]:
        return [(a["rule"], a["machine"], a["status"])
                for _, body in receiver.accepted for a in body["alerts"]]

    async def advance_until(condition: Callable[[], bool]) -> None:
        async with asyncio.timeout(20):
            while not condition():
                clock.advance(500)  # the alert core runs on the gateway's clock
                await asyncio.sleep(0.1)

    task = asyncio.create_task(gateway.run(api=False))
    try:
        clock.set(START)
        await wait_for(lambda: gateway.metrics.interlock_faults[("c", "readback_mismatch")] >= 1)
        await advance_until(lambda: firing() == [("interlock-unknown", "c", "firing")])
        await wait_for(lambda: gateway.metrics.interlock_faults[("c", "readback_mismatch")] >= 3)
        assert [v.rule for v in gateway.alerts.view()] == ["interlock-unknown"]

        await nodes["C.Enabled"].write_value(True)
        await advance_until(lambda: len(firing()) == 2)
        assert firing()[1] == ("interlock-unknown", "c", "resolved")
        assert gateway.alerts.view() == []
    finally:
        task.cancel()
        await asyncio.gather(task, return_exceptions=True)
        receiver.close()
