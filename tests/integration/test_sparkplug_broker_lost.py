"""The broker lost under the Sparkplug host: Mosquitto killed (no NDEATH reaches anyone, the
edge node's Will dies with the broker) marks the node's machines offline at the host's
receive time; restarted on the same port, the host reconnects with a clean session and the
machines come back through births, never through a backlog. A primary host asks the node to
rebirth if it reconnected after the node's births (``not_born``); a passive host sends
nothing and waits for births (here the node's own on reconnecting, or one that another host,
played by the test, asks for)."""

from __future__ import annotations

import asyncio
import time

import paho.mqtt.client as paho
import pytest
from paho.mqtt.enums import CallbackAPIVersion
from tests.sparkplug_edge import (
    D,
    Edge,
    G,
    N,
    edges_fixture,  # noqa: F401 (the fixture `edges`)
    start_edge,
)
from tests.waiting import wait_for

from pilotline.collectors.mqtt.collector import Quarantined
from pilotline.collectors.mqtt.config import MqttBrokerConfig
from pilotline.collectors.sparkplug.collector import SparkplugCollector
from pilotline.collectors.sparkplug.config import SparkplugHost
from pilotline.collectors.sparkplug.host import Binding
from pilotline.collectors.sparkplug.payload import encode_rebirth
from pilotline.collectors.sparkplug.topic import node_topic
from pilotline.demo.broker import MosquittoBroker
from pilotline.rules.sample import Sample

pytestmark = pytest.mark.integration

BINDINGS = [
    Binding("laser-01", G, N, None, {"state": "Status/State", "power_w": "Power"}),
    Binding("press-07", G, N, D, {"state": "State", "count": "Count"}),
]
OFFLINE = {"laser-01": ("state", "NotAvailable"), "press-07": ("state", "NotAvailable")}


def values(samples: list[Sample], machine: str, signal: str) -> list[object]:
    return [s.values[signal] for s in samples if s.machine == machine and signal in s.values]


def rebirth_request(port: int) -> None:
    """An NCMD rebirth from another host (the plant's primary host, for a passive pilotline)."""
    other = paho.Client(CallbackAPIVersion.VERSION2, client_id="the-plants-primary-host")
    other.connect("127.0.0.1", port)
    other.loop_start()
    request = encode_rebirth(int(time.time() * 1000))
    other.publish(node_topic(G, "NCMD", N), request).wait_for_publish(5)
    other.loop_stop()
    other.disconnect()


@pytest.mark.parametrize("mode", ["passive", "primary"])
async def test_the_broker_killed_and_restarted(
    mode: str, broker: MosquittoBroker, edges: list[Edge]
) -> None:
    samples: list[Sample] = []
    rejected: list[Quarantined] = []
    collector = SparkplugCollector(
        MqttBrokerConfig(url=broker.url, reconnect_max_s=1),
        SparkplugHost(mode=mode, host_id="pilotline-test" if mode == "primary" else None,
                      heartbeat_s=1),
        BINDINGS,
        samples.append,
        rejected.append,
        client_id=f"sparkplug-{mode}",
        offline_values=OFFLINE,
    )
    task = asyncio.create_task(collector.run())
    try:
        await wait_for(lambda: collector.connected)
        edge = await start_edge(broker, edges)
        await wait_for(lambda: values(samples, "press-07", "state") == ["Idle"])
        await wait_for(lambda: values(samples, "laser-01", "state") == ["Idle"])

        before = int(time.time() * 1000)
        broker.stop(kill=True)
        await wait_for(lambda: not collector.connected)
        after = int(time.time() * 1000)
        # both machines offline from the moment the host lost the broker
        await wait_for(lambda: values(samples, "laser-01", "state")[-1] == "NotAvailable")
        await wait_for(lambda: values(samples, "press-07", "state")[-1] == "NotAvailable")
        offline = [s for s in samples if s.values.get("state") == "NotAvailable"]
        assert sorted(s.machine for s in offline) == ["laser-01", "press-07"]
        assert all(before <= s.ts_ms <= after for s in offline), (before, offline, after)
        assert not collector.host.node_state(G, N)[0]
        n = len(samples)
        await asyncio.sleep(1.5)  # no heartbeat keeps a machine alive while the host is away
        assert samples[n:] == []

        broker.start()
        await wait_for(lambda: collector.connected, timeout_s=15)
        await wait_for(lambda: "born 2" in edge.lines, timeout_s=15)  # the node's own births
        # a change after the reconnection, as data (by alias): it reaches the machine through
        # births heard now or, when the node was born before the host subscribed, through
        # the births that follow a rebirth request
        await edge.send("ndata", metrics=[{"alias": 1, "type": "String", "value": "Executing"}])
        if mode == "passive":
            await asyncio.sleep(1)
            if not collector.host.node_state(G, N)[0]:
                await asyncio.to_thread(rebirth_request, broker.port)
        await wait_for(lambda: values(samples, "laser-01", "state")[-1] == "Executing",
                       timeout_s=15)
        # (the device's births after a rebirth carry the node's state: edge.js)
        await wait_for(lambda: values(samples, "press-07", "state")[-1] != "NotAvailable")
        assert collector.host.node_state(G, N)[0]
        health = collector.health_report(int(time.time() * 1000))
        assert health["healthy"]
        assert health["reconnects"] == 1
        if mode == "passive":
            assert collector.host.rebirths == {}  # a passive host never asks
        else:
            assert set(collector.host.rebirths) <= {"not_born"}
        assert rejected == []
    finally:
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
